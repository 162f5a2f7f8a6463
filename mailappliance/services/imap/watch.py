"""Wakes IDLE sessions when their folder changes (RFC 2177).

Changes made in this process (delivery, another session's STORE or EXPUNGE) are
signalled at once through :meth:`FolderWatch.changed`. Changes made by another
process sharing the database are found by one poll every ``POLL_INTERVAL``
seconds that reads the UIDNEXT and HIGHESTMODSEQ of every watched folder in a
single query, however many sessions are idling.
"""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Optional

import gevent

log = logging.getLogger("mailappliance.imap")

POLL_INTERVAL = 1.0

Callback = Callable[[], None]


class FolderWatch:
    def __init__(self, read_folders: Callable[[list], list[dict]], interval: float = POLL_INTERVAL) -> None:
        self.read_folders = read_folders
        self.interval = interval
        self._watchers: dict[object, set[Callback]] = {}
        self._versions: dict[object, tuple] = {}
        self._greenlet: Optional[gevent.Greenlet] = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._poll_forever)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def add(self, folder_id: object, callback: Callback) -> None:
        self._watchers.setdefault(folder_id, set()).add(callback)

    def remove(self, folder_id: object, callback: Callback) -> None:
        callbacks = self._watchers.get(folder_id)
        if callbacks is not None:
            callbacks.discard(callback)
            if not callbacks:
                del self._watchers[folder_id]
                self._versions.pop(folder_id, None)

    def changed(self, folder_ids: Iterable[object]) -> None:
        for folder_id in folder_ids:
            for callback in list(self._watchers.get(folder_id, ())):
                callback()

    def poll(self) -> None:
        """Compare the watched folders' counters with the last poll; wake changed ones."""
        ids = list(self._watchers)
        if not ids:
            return
        changed = []
        for doc in self.read_folders(ids):
            version = (doc.get("uidnext"), doc.get("highestmodseq"), bool(doc.get("pending")))
            if self._versions.get(doc["_id"]) != version:
                # A folder seen for the first time wakes its watchers once too: it may
                # have changed between their last look and this poll.
                changed.append(doc["_id"])
                self._versions[doc["_id"]] = version
        self.changed(changed)

    def _poll_forever(self) -> None:
        while True:
            gevent.sleep(self.interval)
            try:
                self.poll()
            except Exception as exc:  # the database may be restarting: try again next time
                log.warning("folder watch poll failed: %s", str(exc)[:200])
