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
    collections.raw.insert_many(blob_documents(shared, b"data", refs=2))
    collections.raw.insert_many(blob_documents(private, b"data", refs=1))
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


def test_release_counts_references_across_chunks(collections):
    from mailappliance.storage.blobs import CHUNK_SIZE

    blobs = BlobStore(collections)
    big = ObjectId()
    data = b"x" * (CHUNK_SIZE * 2 + 5)
    collections.raw.insert_many(blob_documents(big, data, refs=3))
    assert blobs.release([(big, len(data)), (big, len(data))]) == 0
    assert blobs.read(big, len(data)) == data
    assert blobs.release([(big, len(data))]) == 1
    assert collections.raw.count_documents({}) == 0
    assert blobs.release([]) == 0
