"""FolderWatch: local changes wake at once; a poll finds changes made by other processes."""
from mailappliance.services.imap.watch import FolderWatch


def test_local_change_wakes_only_that_folders_watchers():
    watch = FolderWatch(lambda ids: [])
    woke = []
    watch.add("f1", lambda: woke.append("a"))
    watch.add("f2", lambda: woke.append("b"))
    watch.changed(["f1"])
    assert woke == ["a"]


def test_poll_wakes_on_new_counters_and_on_first_sight():
    state = {"f1": {"_id": "f1", "uidnext": 5, "highestmodseq": 9}}
    reads = []

    def read(ids):
        reads.append(list(ids))
        return [state[i] for i in ids]

    watch = FolderWatch(read)
    woke = []
    callback = lambda: woke.append(1)  # noqa: E731
    watch.add("f1", callback)
    watch.poll()
    assert woke == [1]  # first sight: it may have changed before the watch began
    watch.poll()
    assert woke == [1]
    state["f1"] = {"_id": "f1", "uidnext": 6, "highestmodseq": 10}
    watch.poll()
    assert woke == [1, 1]
    watch.remove("f1", callback)
    watch.poll()
    assert reads[-1] == ["f1"] and len(reads) == 3  # nothing watched: no query
