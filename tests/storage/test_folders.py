"""UID allocation against the real database: atomic across processes, only growing."""
import gevent
from bson import ObjectId

from mailappliance.storage.folders import DEFAULT_FOLDERS, FolderStore


def test_reservations_are_consecutive(collections):
    store = FolderStore(collections)
    folder = store.create("a@example.com", "INBOX")
    first = store.reserve(folder["_id"], 3)
    second = store.reserve(folder["_id"], 2)
    assert (first.first_uid, first.count) == (1, 3)
    assert second.first_uid == 4
    assert second.first_modseq == first.first_modseq + 3
    doc = collections.folders.find_one({"_id": folder["_id"]})
    assert doc["uidnext"] == 6 and doc["highestmodseq"] == 6


def test_two_stores_as_two_processes_never_share_a_uid(collections):
    """Each FolderStore caches what it last saw, like separate appliance processes would."""
    stores = [FolderStore(collections) for _ in range(4)]
    folder = stores[0].create("a@example.com", "INBOX")
    got = []

    def worker(store):
        for _ in range(40):
            r = store.reserve(folder["_id"], 2)
            got.extend([r.first_uid, r.first_uid + 1])

    gevent.joinall([gevent.spawn(worker, s) for s in stores], raise_error=True)
    assert sorted(got) == list(range(1, 321))


def test_missing_folder(collections):
    store = FolderStore(collections)
    try:
        store.reserve(ObjectId(), 1)
    except KeyError:
        pass
    else:
        raise AssertionError("reserving in a missing folder must fail")


def test_default_folders_have_special_use(collections):
    docs = FolderStore(collections).default_documents("a@example.com")
    assert [(d["name"], d["special_use"]) for d in docs] == list(DEFAULT_FOLDERS)
    assert all(d["uidnext"] == 1 and 0 < d["uidvalidity"] < 2**32 for d in docs)
