"""IMAP folders of an account, and atomic UID allocation (RFC 3501 §2.3.1.1).

Each folder document also counts its messages, unseen messages and bytes, so
SELECT/STATUS and quota checks never count or scan messages (shared/embedded-db.md).

UIDs and modification sequences (RFC 7162 §3.1) are reserved with a
compare-and-swap ``update_one`` guarded by the values last seen, so two processes
sharing one database never hand out the same UID and UIDs only grow. The last seen
values are cached, so an uncontended reservation is a single round trip; a miss
re-reads the folder and tries again. ``find_one_and_update`` is avoided on purpose:
on the embedded server it scans the collection (shared/embedded-db.md).
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from mailappliance.storage.mongo import Collections

INBOX = "INBOX"
# RFC 6154 special-use folders created with every account.
DEFAULT_FOLDERS: tuple[tuple[str, Optional[str]], ...] = (
    (INBOX, None),
    ("Sent", "\\Sent"),
    ("Drafts", "\\Drafts"),
    ("Trash", "\\Trash"),
    ("Junk", "\\Junk"),
)
MAX_CAS_ATTEMPTS = 200
CAS_BACKOFF = 0.002  # seconds; grows with each lost race, randomised


class FolderExists(Exception):
    pass


@dataclass(frozen=True)
class Reservation:
    """``count`` consecutive UIDs from ``first_uid`` and modseqs from ``first_modseq``."""

    first_uid: int
    first_modseq: int
    count: int


def new_uidvalidity() -> int:
    """A UIDVALIDITY that grows over time and fits in 32 bits (RFC 3501 §2.3.1.1)."""
    return int(time.time()) & 0xFFFFFFFF


def folder_document(mailbox: str, name: str, special_use: Optional[str], now: datetime) -> dict:
    return {
        "_id": ObjectId(),
        "mailbox": mailbox,
        "name": name,
        "special_use": special_use,
        "subscribed": True,
        "uidvalidity": new_uidvalidity(),
        "uidnext": 1,
        "highestmodseq": 1,
        "messages": 0,
        "unseen": 0,
        "bytes": 0,
        "created_at": now,
    }


class FolderStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections
        self._seen: dict[ObjectId, tuple[int, int]] = {}

    def default_documents(self, mailbox: str) -> list[dict]:
        now = datetime.now(timezone.utc)
        return [folder_document(mailbox, name, use, now) for name, use in DEFAULT_FOLDERS]

    def create(self, mailbox: str, name: str, special_use: Optional[str] = None) -> dict:
        doc = folder_document(mailbox, name, special_use, datetime.now(timezone.utc))
        try:
            self.c.folders.insert_one(doc)
        except DuplicateKeyError:
            raise FolderExists(name) from None
        return doc

    def get(self, mailbox: str, name: str) -> Optional[dict]:
        return self.c.folders.find_one({"mailbox": mailbox, "name": name})

    def of_mailbox(self, mailbox: str) -> list[dict]:
        return list(self.c.folders.find({"mailbox": mailbox}).sort("name", 1))

    def reserve(
        self, folder_id: ObjectId, count: int, size: int = 0, unseen: int = 0, token: Optional[ObjectId] = None
    ) -> Reservation:
        """Reserve ``count`` UIDs and modseqs in one folder; safe across processes.

        The same update counts the ``count`` messages (``unseen`` of them unseen,
        ``size`` bytes in all) about to be stored; :meth:`uncount` takes them back
        if storing fails. With a ``token``, a retry after a lost reply finds its own
        earlier update instead of reserving (and counting) a second time.
        """
        for attempt in range(MAX_CAS_ATTEMPTS):
            seen = self._seen.get(folder_id)
            if seen is None:
                doc = self.c.folders.find_one({"_id": folder_id}, {"uidnext": 1, "highestmodseq": 1, "reservation": 1})
                if doc is None:
                    raise KeyError(f"folder {folder_id} does not exist")
                if token is not None and doc.get("reservation") == token:
                    self._seen[folder_id] = (doc["uidnext"], doc["highestmodseq"])
                    return Reservation(doc["uidnext"] - count, doc["highestmodseq"] - count + 1, count)
                seen = (doc["uidnext"], doc["highestmodseq"])
            uidnext, modseq = seen
            update: dict = {"$inc": {"uidnext": count, "highestmodseq": count, "messages": count, "unseen": unseen, "bytes": size}}
            if token is not None:
                update["$set"] = {"reservation": token}
            try:
                result = self.c.folders.update_one({"_id": folder_id, "uidnext": uidnext, "highestmodseq": modseq}, update)
            except Exception:
                self._seen.pop(folder_id, None)  # unknown outcome: read (and check the token) next time
                raise
            if result.modified_count == 1:
                self._seen[folder_id] = (uidnext + count, modseq + count)
                return Reservation(uidnext, modseq + 1, count)
            self._seen.pop(folder_id, None)  # someone else moved it: read again
            time.sleep(random.uniform(0, CAS_BACKOFF * min(attempt + 1, 10)))
        raise RuntimeError(f"could not reserve UIDs in folder {folder_id}: too much contention")

    def uncount(self, folder_id: ObjectId, count: int, size: int, unseen: int) -> None:
        """Undo the counting of a reservation whose messages were not stored."""
        self.c.folders.update_one(
            {"_id": folder_id}, {"$inc": {"messages": -count, "unseen": -unseen, "bytes": -size}}
        )

    def usage(self, mailboxes: list[str]) -> dict[str, int]:
        """Bytes stored per mailbox: the sum of its folders' counters."""
        pipeline = [
            {"$match": {"mailbox": {"$in": mailboxes}}},
            {"$group": {"_id": "$mailbox", "bytes": {"$sum": "$bytes"}}},
        ]
        return {row["_id"]: row["bytes"] for row in self.c.folders.aggregate(pipeline)}

    def forget(self, folder_ids) -> None:
        for folder_id in folder_ids:
            self._seen.pop(folder_id, None)
