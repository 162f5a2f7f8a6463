"""A per-process index of recently used folders: UIDs, flags, modseqs, sizes and dates.

Dovecot keeps an index file per folder so that SELECT, ``FETCH 1:* (FLAGS)`` and
flag searches never touch the messages. This is the same idea kept in memory: the
first use of a folder reads the small fields of all its messages once; every
later use reads only what changed since, with one query on the ``{folder, modseq}``
index (RFC 7162's modseqs make that exact), plus the expunge tombstones. Snapshots
are shared by every session of the process; sessions copy the UID list they need.

Only changes below the folder's visible limits (``folders.visible_limits``) are ever
folded in, so the index never shows a UID out of order. A snapshot older than the
tombstones' lifetime is read again in full rather than trusted.
"""
from __future__ import annotations

import time
from bisect import bisect_left
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Optional

from mailappliance.storage.messages import MessageStore
from mailappliance.storage.mongo import TOMBSTONE_SECONDS

MAX_FOLDERS = 64  # snapshots kept; the least recently used goes first
MAX_MESSAGES = 2_000_000  # across all snapshots, to bound memory
MAX_AGE = TOMBSTONE_SECONDS / 4  # seconds; older snapshots are read again in full


@dataclass
class Snapshot:
    """One folder as of ``modseq``: every UID below ``uid_limit`` with its flags and modseq."""

    uidvalidity: int
    modseq: int
    uid_limit: int
    uids: list[int] = field(default_factory=list)
    messages: dict[int, dict] = field(default_factory=dict)  # uid -> LISTING_FIELDS of the message
    loaded_at: float = field(default_factory=time.monotonic)

    def first_unseen(self) -> Optional[int]:
        for uid in self.uids:
            if "\\Seen" not in self.messages[uid].get("flags", ()):
                return uid
        return None


class FolderIndex:
    def __init__(self, store: MessageStore, max_folders: int = MAX_FOLDERS) -> None:
        self.store = store
        self.max_folders = max_folders
        self._snapshots: OrderedDict[Any, Snapshot] = OrderedDict()
        self.full_reads = 0
        self.incremental_reads = 0

    def snapshot(self, folder_id: Any, uidvalidity: int, modseq: int, uid_limit: int) -> Snapshot:
        """The folder brought up to at least ``modseq`` / ``uid_limit`` (visible limits)."""
        snap = self._snapshots.get(folder_id)
        if snap is not None and (
            snap.uidvalidity != uidvalidity or time.monotonic() - snap.loaded_at > MAX_AGE
        ):
            snap = None
        if snap is None:
            snap = self._load(folder_id, uidvalidity, modseq, uid_limit)
        elif modseq > snap.modseq:
            if not self._catch_up(folder_id, snap, modseq, uid_limit):
                snap = self._load(folder_id, uidvalidity, modseq, uid_limit)
        self._snapshots[folder_id] = snap
        self._snapshots.move_to_end(folder_id)
        self._trim()
        return snap

    def forget(self, folder_id: Any) -> None:
        self._snapshots.pop(folder_id, None)

    def _load(self, folder_id: Any, uidvalidity: int, modseq: int, uid_limit: int) -> Snapshot:
        self.full_reads += 1
        docs = self.store.listing(folder_id, uid_limit)
        snap = Snapshot(uidvalidity, modseq, uid_limit)
        snap.uids = [d["uid"] for d in docs]
        snap.messages = {d["uid"]: d for d in docs}
        return snap

    def _catch_up(self, folder_id: Any, snap: Snapshot, modseq: int, uid_limit: int) -> bool:
        """Fold in changes in ``(snap.modseq, modseq]``; False when a full read is needed."""
        self.incremental_reads += 1
        changes = self.store.changes(folder_id, snap.modseq, modseq)
        for uid in changes.expunged:
            if snap.messages.pop(uid, None) is not None:
                i = bisect_left(snap.uids, uid)
                del snap.uids[i]
        last = snap.uids[-1] if snap.uids else 0
        for doc in changes.messages:
            uid = doc["uid"]
            if uid in snap.messages:
                snap.messages[uid] = doc
            elif last < uid < uid_limit:
                snap.messages[uid] = doc
                snap.uids.append(uid)
                last = uid
            elif uid < uid_limit:
                return False  # an unknown UID below known ones: never guess, read it all
        snap.modseq = modseq
        snap.uid_limit = max(snap.uid_limit, uid_limit)
        return True

    def _trim(self) -> None:
        total = sum(len(s.uids) for s in self._snapshots.values())
        while self._snapshots and (len(self._snapshots) > self.max_folders or total > MAX_MESSAGES):
            _, dropped = self._snapshots.popitem(last=False)
            total -= len(dropped.uids)
