"""Accounts: unique, cascade delete that keeps bytes other mailboxes still use."""
import pytest
from bson import ObjectId

from mailappliance.storage.blobs import BlobStore, blob_documents
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.mailboxes import MailboxExists, MailboxStore


def test_create_duplicate_and_delete_cascade(collections):
    folders = FolderStore(collections)
    blobs = BlobStore(collections)
    store = MailboxStore(collections, folders, blobs)
    a = store.create("a@example.com", "h")
    b = store.create("b@example.com", "h")
    with pytest.raises(MailboxExists):
        store.create("a@example.com", "h")
    assert collections.folders.count_documents({"mailbox": "a@example.com"}) == 5
    shared, private = ObjectId(), ObjectId()
    for blob in (shared, private):
        collections.raw.insert_many(blob_documents(blob, b"data"))
    collections.messages.insert_many(
        [
            {"mailbox": "a@example.com", "folder": a["inbox"], "uid": 1, "blob": shared, "size": 4},
            {"mailbox": "a@example.com", "folder": a["inbox"], "uid": 2, "blob": private, "size": 4},
            {"mailbox": "b@example.com", "folder": b["inbox"], "uid": 1, "blob": shared, "size": 4},
        ]
    )
    assert store.delete("a@example.com")
    assert not store.delete("a@example.com")
    assert collections.folders.count_documents({"mailbox": "a@example.com"}) == 0
    assert collections.messages.count_documents({"mailbox": "a@example.com"}) == 0
    assert blobs.read(shared, 4) == b"data", "b still has a message using these bytes"
    with pytest.raises(KeyError):
        blobs.read(private, 4)
    assert store.domains() == {"example.com"}
