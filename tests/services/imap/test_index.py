"""The per-process folder index against the real database: one full read, then only changes."""
from datetime import datetime, timezone

from bson import ObjectId

from mailappliance.services.imap.index import FolderIndex
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import FolderStore, visible_limits
from mailappliance.storage.messages import MessageStore


def add(collections, folders, folder, n, flags=()):
    r = folders.reserve(folder["_id"], n, size=n, unseen=n)
    collections.messages.insert_many([
        {"_id": ObjectId(), "folder": folder["_id"], "mailbox": "a@x", "uid": r.first_uid + i, "modseq": r.first_modseq + i,
         "flags": list(flags), "size": 1, "blob": ObjectId(), "internal_date": datetime.now(timezone.utc)}
        for i in range(n)
    ])
    folders.release([folder["_id"]], r.token)


def snapshot(index, folders, folder):
    doc = folders.by_id(folder["_id"])
    limits = visible_limits(doc)
    return index.snapshot(folder["_id"], doc["uidvalidity"], limits.modseq_limit, limits.uid_limit)


def test_index_follows_new_messages_flags_and_expunges_incrementally(collections):
    folders = FolderStore(collections)
    store = MessageStore(collections, folders, BlobStore(collections))
    folder = folders.create("a@x", "INBOX")
    add(collections, folders, folder, 5)
    index = FolderIndex(store)
    snap = snapshot(index, folders, folder)
    assert snap.uids == [1, 2, 3, 4, 5] and index.full_reads == 1
    assert snap.first_unseen() == 1
    store.store_flags(folder["_id"], [(1, 2)], "+", ["\\Seen", "\\Deleted"])
    store.expunge(folder["_id"], [(2, 2)])
    add(collections, folders, folder, 2)
    snap = snapshot(index, folders, folder)
    assert snap.uids == [1, 3, 4, 5, 6, 7]
    assert snap.messages[1]["flags"] == ["\\Seen", "\\Deleted"] and snap.first_unseen() == 3
    assert index.full_reads == 1 and index.incremental_reads == 1


def test_pending_reservation_is_not_shown_until_written(collections):
    folders = FolderStore(collections)
    store = MessageStore(collections, folders, BlobStore(collections))
    folder = folders.create("a@x", "INBOX")
    add(collections, folders, folder, 2)
    index = FolderIndex(store)
    snapshot(index, folders, folder)
    slow = folders.reserve(folder["_id"], 1)  # another process, not yet stored
    add(collections, folders, folder, 1)  # UID 4 stored first
    assert snapshot(index, folders, folder).uids == [1, 2]
    collections.messages.insert_one({"_id": ObjectId(), "folder": folder["_id"], "uid": slow.first_uid,
                                     "modseq": slow.first_modseq, "flags": [], "size": 1, "blob": ObjectId()})
    folders.release([folder["_id"]], slow.token)
    assert snapshot(index, folders, folder).uids == [1, 2, 3, 4]


def test_least_recently_used_snapshots_are_dropped(collections):
    folders = FolderStore(collections)
    store = MessageStore(collections, folders, BlobStore(collections))
    index = FolderIndex(store, max_folders=2)
    made = [folders.create("a@x", f"F{i}") for i in range(3)]
    for folder in made:
        snapshot(index, folders, folder)
    snapshot(index, folders, made[0])
    assert index.full_reads == 4  # F0 was dropped when F2 came, and read again
