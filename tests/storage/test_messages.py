"""IMAP message storage against the real database: flags with modseqs, copies, expunges,
and what other sessions (other processes) may see while a writer is mid-way."""
from datetime import datetime, timezone

from bson import ObjectId

from mailappliance.storage.blobs import BlobStore, blob_documents
from mailappliance.storage.folders import FolderStore, visible_limits
from mailappliance.storage.messages import MessageStore, ranges_of, uid_query


def setup(collections, n=3, flags=None):
    folders = FolderStore(collections)
    blobs = BlobStore(collections)
    store = MessageStore(collections, folders, blobs)
    folder = folders.create("a@example.com", "INBOX")
    r = folders.reserve(folder["_id"], n, size=10 * n, unseen=n)
    docs = []
    for i in range(n):
        blob = ObjectId()
        collections.raw.insert_many(blob_documents(blob, b"x" * 10))
        docs.append({"_id": ObjectId(), "folder": folder["_id"], "mailbox": "a@example.com", "uid": r.first_uid + i,
                     "modseq": r.first_modseq + i, "flags": list(flags or []), "size": 10, "blob": blob,
                     "internal_date": datetime.now(timezone.utc)})
    collections.messages.insert_many(docs)
    folders.release([folder["_id"]], r.token)
    return folders, store, folder


def test_ranges_and_queries():
    assert ranges_of([5, 1, 2, 3, 7, 7]) == [(1, 3), (5, 5), (7, 7)]
    assert uid_query(1, [(1, 3)]) == {"folder": 1, "uid": {"$gte": 1, "$lte": 3}}
    assert "$or" in uid_query(1, [(1, 3), (5, 6)])


def test_store_flags_one_modseq_per_command_and_unseen_counter(collections):
    folders, store, folder = setup(collections)
    changed, refused, unchanged = store.store_flags(folder["_id"], [(1, 2)], "+", ["\\Seen"])
    assert [c.uid for c in changed] == [1, 2] and len({c.modseq for c in changed}) == 1 and not refused
    doc = folders.get("a@example.com", "INBOX")
    assert doc["unseen"] == 1 and doc["highestmodseq"] == changed[0].modseq
    # Adding a flag that is already there changes nothing, not even the modseq.
    changed, _, unchanged = store.store_flags(folder["_id"], [(1, 1)], "+", ["\\Seen"])
    assert changed == [] and [u.uid for u in unchanged] == [1]
    changed, _, _ = store.store_flags(folder["_id"], [(1, 3)], "", ["$Work"])
    assert [c.flags for c in changed] == [["$Work"]] * 3
    assert folders.get("a@example.com", "INBOX")["unseen"] == 3


def test_unchangedsince_refuses_messages_changed_later(collections):
    folders, store, folder = setup(collections)
    before = folders.get("a@example.com", "INBOX")["highestmodseq"]
    store.store_flags(folder["_id"], [(2, 2)], "+", ["\\Flagged"])
    changed, refused, _ = store.store_flags(folder["_id"], [(1, 3)], "+", ["\\Answered"], unchangedsince=before)
    assert refused == [2] and [c.uid for c in changed] == [1, 3]


def test_changes_report_new_flags_and_expunges_by_modseq(collections):
    folders, store, folder = setup(collections, flags=["\\Deleted"])
    start = folders.get("a@example.com", "INBOX")["highestmodseq"]
    store.store_flags(folder["_id"], [(1, 1)], "+", ["\\Seen"])
    removed = store.expunge(folder["_id"], [(2, 3)])
    assert removed == [2, 3]
    end = folders.get("a@example.com", "INBOX")["highestmodseq"]
    changes = store.changes(folder["_id"], start, end)
    assert [m["uid"] for m in changes.messages] == [1] and changes.expunged == [2, 3]
    doc = folders.get("a@example.com", "INBOX")
    assert doc["messages"] == 1 and doc["bytes"] == 10


def test_copy_shares_bytes_and_expunge_releases_them(collections):
    folders, store, folder = setup(collections, n=2)
    target = folders.create("a@example.com", "Archive")
    pairs = store.copy(folder["_id"], [(1, 2)], target)
    assert pairs == [(1, 1), (2, 2)]
    blob = collections.messages.find_one({"folder": target["_id"], "uid": 1})["blob"]
    assert collections.raw.find_one({"_id": f"{blob}/0"})["refs"] == 2
    assert folders.get("a@example.com", "Archive")["messages"] == 2
    store.remove(folder["_id"], [(1, 2)])
    assert collections.raw.find_one({"_id": f"{blob}/0"})["refs"] == 1
    store.remove(target["_id"], [(1, 2)])
    assert collections.raw.count_documents({}) == 0


def test_pending_reservation_of_another_process_hides_later_changes(collections):
    """Process A reserved UID 4 and has not stored it; B stored UID 5: readers wait for A."""
    folders_a, store, folder = setup(collections)
    folders_b = FolderStore(collections)
    slow = folders_a.reserve(folder["_id"], 1)
    fast = folders_b.reserve(folder["_id"], 1)
    folders_b.release([folder["_id"]], fast.token)
    limits = visible_limits(folders_a.by_id(folder["_id"]))
    assert limits.uid_limit == slow.first_uid == 4
    assert limits.modseq_limit == slow.first_modseq - 1
    folders_a.release([folder["_id"]], slow.token)
    limits = visible_limits(folders_a.by_id(folder["_id"]))
    assert limits.uid_limit == 6 and limits.modseq_limit == fast.first_modseq


def test_a_reservation_left_by_a_dead_writer_stops_hiding_after_the_ttl(collections):
    folders, store, folder = setup(collections)
    folders.reserve(folder["_id"], 1)
    doc = folders.by_id(folder["_id"])
    later = datetime.now(timezone.utc).replace(year=datetime.now().year + 1)
    limits = visible_limits(doc, now=later)
    assert limits.uid_limit == 5 and limits.stale_tokens
    folders.drop_stale(folder["_id"], limits.stale_tokens)
    assert not folders.by_id(folder["_id"]).get("pending")


def test_recent_is_claimed_by_exactly_one_session(collections):
    folders, store, folder = setup(collections)
    assert folders.claim_recent(folder["_id"], None, 4)
    assert not folders.claim_recent(folder["_id"], None, 4)
    assert folders.claim_recent(folder["_id"], 4, 6)


def test_two_sessions_expunging_the_same_messages_count_and_release_once(collections):
    """Both read the same \\Deleted messages; only one may count them down and release their bytes."""
    import gevent

    folders, store, folder = setup(collections, n=20, flags=["\\Deleted"])
    keep = folders.create("a@example.com", "Keep")
    store.copy(folder["_id"], [(1, 20)], keep)  # every body now has two references
    other = MessageStore(collections, FolderStore(collections), BlobStore(collections))
    results = [gevent.spawn(s.expunge, folder["_id"]) for s in (store, other, store)]
    gevent.joinall(results, raise_error=True)
    removed = sorted(u for g in results for u in g.value)
    assert removed == list(range(1, 21))  # each UID expunged exactly once
    doc = folders.get("a@example.com", "INBOX")
    assert (doc["messages"], doc["unseen"], doc["bytes"]) == (0, 0, 0)
    kept = list(collections.messages.find({"folder": keep["_id"]}))
    assert len(kept) == 20
    assert all(collections.raw.find_one({"_id": f"{m['blob']}/0"})["refs"] == 1 for m in kept)


def test_copy_skips_a_message_whose_body_went_meanwhile(collections):
    folders, store, folder = setup(collections, n=2)
    target = folders.create("a@example.com", "Archive")
    gone = collections.messages.find_one({"folder": folder["_id"], "uid": 1})
    store.blobs.release([(gone["blob"], gone["size"])])  # as if expunged by another session
    pairs = store.copy(folder["_id"], [(1, 2)], target)
    assert [src for src, _ in pairs] == [2]
    assert folders.get("a@example.com", "Archive")["messages"] == 1


def test_keywords_compare_case_insensitively():
    from mailappliance.storage.messages import _apply

    assert _apply(["$Label1"], "+", ["$label1", "Work", "WORK"]) == ["$Label1", "Work"]
    assert _apply(["$Label1", "Work"], "-", ["work"]) == ["$Label1"]
