"""IMAP folders of an account, and atomic UID allocation (RFC 3501 §2.3.1.1).

UIDs and modification sequences (RFC 7162 §3.1) are reserved with a
compare-and-swap ``update_one`` guarded by the values last seen, so two processes
sharing one database never hand out the same UID and UIDs only grow. The last seen
values are cached, so an uncontended reservation is a single round trip; a miss
re-reads the folder and tries again. ``find_one_and_update`` is avoided on purpose:
on the embedded server it scans the collection (shared/embedded-db.md).
"""
from __future__ import annotations

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
MAX_CAS_ATTEMPTS = 50


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

    def list(self, mailbox: str) -> list[dict]:
        return list(self.c.folders.find({"mailbox": mailbox}).sort("name", 1))

    def reserve(self, folder_id: ObjectId, count: int) -> Reservation:
        """Reserve ``count`` UIDs and modseqs in one folder; safe across processes."""
        for _ in range(MAX_CAS_ATTEMPTS):
            seen = self._seen.get(folder_id)
            if seen is None:
                doc = self.c.folders.find_one({"_id": folder_id}, {"uidnext": 1, "highestmodseq": 1})
                if doc is None:
                    raise KeyError(f"folder {folder_id} does not exist")
                seen = (doc["uidnext"], doc["highestmodseq"])
            uidnext, modseq = seen
            result = self.c.folders.update_one(
                {"_id": folder_id, "uidnext": uidnext, "highestmodseq": modseq},
                {"$inc": {"uidnext": count, "highestmodseq": count}},
            )
            if result.modified_count == 1:
                self._seen[folder_id] = (uidnext + count, modseq + count)
                return Reservation(uidnext, modseq + 1, count)
            self._seen.pop(folder_id, None)  # someone else moved it: read again
        raise RuntimeError(f"could not reserve UIDs in folder {folder_id}: too much contention")

    def forget(self, folder_ids) -> None:
        for folder_id in folder_ids:
            self._seen.pop(folder_id, None)
