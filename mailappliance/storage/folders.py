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
from datetime import datetime, timedelta, timezone
from typing import Optional

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.write_concern import WriteConcern
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
HIERARCHY_DELIMITER = "/"
MAX_KEYWORDS = 100  # keywords one STORE or APPEND may add to a folder's list
MAX_CAS_ATTEMPTS = 200
# A reservation not released within this long belongs to a writer that died; readers
# stop waiting for it (see ``visible_limits``).
PENDING_TTL = timedelta(seconds=120)
CAS_BACKOFF = 0.002  # seconds; grows with each lost race, randomised


class FolderExists(Exception):
    pass


@dataclass(frozen=True)
class Reservation:
    """``count`` consecutive UIDs from ``first_uid`` and modseqs from ``first_modseq``."""

    first_uid: int
    first_modseq: int
    count: int
    token: Optional[ObjectId] = None


@dataclass(frozen=True)
class VisibleLimits:
    """What a reader may announce of a folder without missing a later-committed change.

    Writers reserve UIDs and modseqs before they store, and two writers (two
    processes) may commit out of order. While a reservation is pending, changes at
    or above it are not announced: ``uid_limit`` is the lowest UID not yet safe to
    show, ``modseq_limit`` the highest modseq that is. RFC 3501 §2.3.1.1 requires
    UIDs to be announced in ascending order; RFC 7162 §3.1 the same for modseqs.
    """

    uid_limit: int
    modseq_limit: int
    stale_tokens: tuple[str, ...] = ()


def visible_limits(folder: dict, now: Optional[datetime] = None) -> VisibleLimits:
    """Limits for ``folder`` (a document with uidnext, highestmodseq and pending)."""
    now = now or datetime.now(timezone.utc)
    uid_limit, modseq_limit = folder["uidnext"], folder["highestmodseq"]
    stale = []
    for token, entry in (folder.get("pending") or {}).items():
        at = entry.get("at")
        if at is None or at < now - PENDING_TTL:
            stale.append(token)
            continue
        if entry.get("count", 0) > 0:
            uid_limit = min(uid_limit, entry["uid"])
        modseq_limit = min(modseq_limit, entry["modseq"] - 1)
    return VisibleLimits(uid_limit, modseq_limit, tuple(stale))

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

    def by_id(self, folder_id: ObjectId, projection: Optional[dict] = None) -> Optional[dict]:
        return self.c.folders.find_one({"_id": folder_id}, projection)

    def several(self, folder_ids: list[ObjectId], projection: Optional[dict] = None) -> list[dict]:
        return list(self.c.folders.find({"_id": {"$in": folder_ids}}, projection))

    def rename(self, mailbox: str, old: str, new: str) -> int:
        """Rename ``old`` and every folder under it (RFC 3501 §6.3.5); returns how many.

        Messages refer to folders by id, so no message is touched.
        """
        prefix = old + HIERARCHY_DELIMITER
        docs = [f for f in self.of_mailbox(mailbox) if f["name"] == old or f["name"].startswith(prefix)]
        renamed = 0
        for doc in sorted(docs, key=lambda f: len(f["name"])):
            target = new + doc["name"][len(old):]
            try:
                result = self.c.folders.update_one({"_id": doc["_id"], "name": doc["name"]}, {"$set": {"name": target}})
            except DuplicateKeyError:
                raise FolderExists(target) from None
            renamed += result.modified_count
        return renamed

    def set_subscribed(self, mailbox: str, name: str, subscribed: bool) -> bool:
        result = self.c.folders.update_one({"mailbox": mailbox, "name": name}, {"$set": {"subscribed": subscribed}})
        return result.matched_count == 1

    def set_noselect(self, folder_id: ObjectId, noselect: bool) -> None:
        """A deleted folder that still has children keeps its name as \\Noselect (RFC 3501 §6.3.4)."""
        self.c.folders.update_one({"_id": folder_id}, {"$set": {"noselect": noselect}})

    def add_keywords(self, folder_id: ObjectId, keywords: list[str]) -> None:
        """Keywords seen in a folder, announced in SELECT's FLAGS (RFC 3501 §7.2.6)."""
        self.c.folders.update_one({"_id": folder_id}, {"$addToSet": {"keywords": {"$each": keywords[:MAX_KEYWORDS]}}})

    def remove(self, folder_id: ObjectId) -> bool:
        self.forget([folder_id])
        return self.c.folders.delete_one({"_id": folder_id}).deleted_count == 1

    def claim_recent(self, folder_id: ObjectId, previous: Optional[int], up_to: int) -> bool:
        """Make this session the one that reports UIDs ``[previous, up_to)`` as \\Recent.

        RFC 3501 §2.3.2: a message is recent in exactly one session. The claim is a
        compare-and-swap on the folder's ``recent_uid``, so only one session (in any
        process) wins each message.
        """
        guard = {"_id": folder_id, "recent_uid": previous} if previous is not None else {
            "_id": folder_id, "recent_uid": {"$exists": False}}
        return self.c.folders.update_one(guard, {"$set": {"recent_uid": up_to}}).modified_count == 1

    def reserve(
        self,
        folder_id: ObjectId,
        count: int,
        size: int = 0,
        unseen: int = 0,
        token: Optional[ObjectId] = None,
        modseqs: Optional[int] = None,
    ) -> Reservation:
        """Reserve ``count`` UIDs and modseqs in one folder; safe across processes.

        The same update counts the ``count`` messages (``unseen`` of them unseen,
        ``size`` bytes in all) about to be stored; :meth:`uncount` takes them back
        if storing fails. With a ``token``, a retry after a lost reply finds its own
        earlier update instead of reserving (and counting) a second time.
        """
        if modseqs is None:
            modseqs = count
        if token is None:
            token = ObjectId()
        for attempt in range(MAX_CAS_ATTEMPTS):
            seen = self._seen.get(folder_id)
            if seen is None:
                doc = self.c.folders.find_one({"_id": folder_id}, {"uidnext": 1, "highestmodseq": 1, "reservation": 1})
                if doc is None:
                    raise KeyError(f"folder {folder_id} does not exist")
                if token is not None and doc.get("reservation") == token:
                    self._seen[folder_id] = (doc["uidnext"], doc["highestmodseq"])
                    return Reservation(doc["uidnext"] - count, doc["highestmodseq"] - modseqs + 1, count, token)
                seen = (doc["uidnext"], doc["highestmodseq"])
            uidnext, modseq = seen
            update: dict = {
                "$inc": {"uidnext": count, "highestmodseq": modseqs, "messages": count, "unseen": unseen, "bytes": size},
                "$set": {
                    "reservation": token,
                    f"pending.{token}": {"uid": uidnext, "modseq": modseq + 1, "count": count, "at": _now()},
                },
            }
            try:
                result = self.c.folders.update_one({"_id": folder_id, "uidnext": uidnext, "highestmodseq": modseq}, update)
            except Exception:
                self._seen.pop(folder_id, None)  # unknown outcome: read (and check the token) next time
                raise
            if result.modified_count == 1:
                self._seen[folder_id] = (uidnext + count, modseq + modseqs)
                return Reservation(uidnext, modseq + 1, count, token)
            self._seen.pop(folder_id, None)  # someone else moved it: read again
            time.sleep(random.uniform(0, CAS_BACKOFF * min(attempt + 1, 10)))
        raise RuntimeError(f"could not reserve UIDs in folder {folder_id}: too much contention")

    def release(self, folder_ids, token: ObjectId) -> None:
        """End the reservations made with ``token``: what they stored may now be announced."""
        ops = [UpdateOne({"_id": folder_id}, {"$unset": {f"pending.{token}": ""}}) for folder_id in folder_ids]
        if ops:
            # No need to wait for the journal: after a crash, PENDING_TTL ends it anyway.
            self.c.folders.with_options(write_concern=WriteConcern(w=1, j=False)).bulk_write(ops, ordered=False)

    def drop_stale(self, folder_id: ObjectId, tokens: tuple[str, ...]) -> None:
        """Remove reservations left by a writer that died (see ``PENDING_TTL``)."""
        if tokens:
            self.c.folders.update_one({"_id": folder_id}, {"$unset": {f"pending.{t}": "" for t in tokens}})

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


def _now() -> datetime:
    return datetime.now(timezone.utc)
