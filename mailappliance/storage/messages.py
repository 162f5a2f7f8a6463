"""Messages in IMAP folders: listing, flag changes, copies and expunges (RFC 3501 §6.4).

Every change reserves a modseq on the folder first (``FolderStore.reserve``), so
other sessions — in this process or another sharing the database — find it with
one indexed query on ``{folder, modseq}`` (RFC 7162 §3.1). Expunged messages leave
a tombstone in ``expunged_messages`` with the modseq of their expunge, which is how
other sessions learn that a UID is gone (RFC 3501 §7.4.1).

Reads use the ``{folder, uid}`` index with bounded ranges and projections, so
listing the UIDs and flags of a large folder never reads envelopes, structures or
raw bytes (shared/embedded-db.md).
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Iterable, Iterator, Optional, Sequence

from bson import ObjectId
from pymongo import UpdateOne

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import FolderStore, Reservation
from mailappliance.storage.mongo import Collections

SEEN = "\\Seen"
MAX_OR_RANGES = 50  # more UID ranges than this are read as one span and filtered here
FLAG_RETRIES = 5  # rounds of a flag change that lost races with other writers
# What a folder listing holds per message: enough for flags, UIDs, sizes and dates.
LISTING_FIELDS = {"uid": 1, "flags": 1, "modseq": 1, "size": 1, "internal_date": 1, "_id": 0}
REMOVAL_CLAIM_SECONDS = 300  # an expunge claim older than this belongs to a dead process
BATCH = 1000  # documents per bulk write / $in query

UidRanges = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class FlagChange:
    uid: int
    flags: list[str]
    modseq: int


@dataclass(frozen=True)
class Changes:
    """What changed in a folder between two modseqs."""

    messages: list[dict]  # uid, flags, modseq of new or changed messages, by uid
    expunged: list[int]  # UIDs expunged


def uid_query(folder_id: ObjectId, ranges: UidRanges) -> dict:
    """A filter for the UIDs in ``ranges`` (sorted, merged) on the {folder, uid} index."""
    if not ranges:
        return {"folder": folder_id, "uid": {"$in": []}}
    if len(ranges) == 1 or len(ranges) > MAX_OR_RANGES:
        return {"folder": folder_id, "uid": {"$gte": ranges[0][0], "$lte": ranges[-1][1]}}
    return {"folder": folder_id, "$or": [{"uid": {"$gte": a, "$lte": b}} for a, b in ranges]}


def in_ranges(uid: int, ranges: UidRanges) -> bool:
    return any(a <= uid <= b for a, b in ranges)


def ranges_of(uids: Iterable[int]) -> list[tuple[int, int]]:
    """Sorted UIDs as merged ranges: ``[1, 2, 3, 7]`` is ``[(1, 3), (7, 7)]``."""
    result: list[tuple[int, int]] = []
    for uid in sorted(uids):
        if result and uid == result[-1][1] + 1:
            result[-1] = (result[-1][0], uid)
        elif not result or uid > result[-1][1]:
            result.append((uid, uid))
    return result


class MessageStore:
    def __init__(self, collections: Collections, folders: FolderStore, blobs: BlobStore) -> None:
        self.c = collections
        self.folders = folders
        self.blobs = blobs

    # ------------------------------------------------------------------ reads
    def uids(self, folder_id: ObjectId, below: int) -> list[int]:
        """UIDs under ``below`` in ascending order (SELECT, RFC 3501 §6.3.1)."""
        cursor = self.c.messages.find({"folder": folder_id, "uid": {"$lt": below}}, {"uid": 1, "_id": 0}).sort("uid", 1)
        return [doc["uid"] for doc in cursor]

    def listing(self, folder_id: ObjectId, below: int) -> list[dict]:
        """The small fields (``LISTING_FIELDS``) of every message under UID ``below``, in UID order."""
        cursor = self.c.messages.find({"folder": folder_id, "uid": {"$lt": below}}, LISTING_FIELDS).sort("uid", 1)
        return list(cursor)

    def find(self, folder_id: ObjectId, ranges: UidRanges, projection: Optional[dict] = None) -> Iterator[dict]:
        """Messages with UIDs in ``ranges``, in UID order."""
        query = uid_query(folder_id, ranges)
        exact = "$or" in query or len(ranges) <= 1
        for doc in self.c.messages.find(query, projection).sort("uid", 1):
            if exact or in_ranges(doc["uid"], ranges):
                yield doc

    def exists(self, message_id: ObjectId) -> bool:
        return self.c.messages.find_one({"_id": message_id}, {"_id": 1}) is not None

    def find_where(self, query: dict, projection: Optional[dict] = None):
        """A cursor over messages (SEARCH compiles its own query on the {folder, uid} index)."""
        return self.c.messages.find(query, projection)

    def count_from(self, folder_id: ObjectId, first_uid: int) -> int:
        """Messages with UID ``first_uid`` or above: a bounded index range (STATUS RECENT)."""
        return self.c.messages.count_documents({"folder": folder_id, "uid": {"$gte": first_uid}})

    def changes(self, folder_id: ObjectId, after: int, up_to: int) -> Changes:
        """New, re-flagged and expunged messages with modseq in ``(after, up_to]``."""
        window = {"folder": folder_id, "modseq": {"$gt": after, "$lte": up_to}}
        messages = sorted(self.c.messages.find(window, LISTING_FIELDS), key=lambda d: d["uid"])
        expunged = sorted(doc["uid"] for doc in self.c.expunged.find(window, {"uid": 1, "_id": 0}))
        return Changes(messages, expunged)

    def raw(self, doc: dict) -> bytes:
        return self.blobs.read(doc["blob"], doc["size"])

    def raw_many(self, docs: list[dict]) -> dict[ObjectId, bytes]:
        """The bytes of several messages in one query, keyed by blob id."""
        return self.blobs.read_many([(d["blob"], d["size"]) for d in docs])

    # ------------------------------------------------------------------ flags
    def store_flags(
        self,
        folder_id: ObjectId,
        ranges: UidRanges,
        mode: str,
        flags: Sequence[str],
        unchangedsince: Optional[int] = None,
    ) -> tuple[list[FlagChange], list[int], list[FlagChange]]:
        """STORE (RFC 3501 §6.4.6) with UNCHANGEDSINCE (RFC 7162 §3.1.3).

        ``mode`` is ``""`` (replace), ``"+"`` or ``"-"``. Returns the changes made
        (one new modseq for the whole command) and the UIDs refused because they
        changed after ``unchangedsince``. Each update is guarded by the message's
        modseq, so a concurrent change is never overwritten: the message is read
        again and the change re-applied.
        """
        changed: list[FlagChange] = []
        unchanged: list[FlagChange] = []
        refused: list[int] = []
        todo = ranges
        reservation: Optional[Reservation] = None
        try:
            for _ in range(FLAG_RETRIES):
                docs = list(self.find(folder_id, todo, {"uid": 1, "flags": 1, "modseq": 1}))
                updates = []
                for doc in docs:
                    if unchangedsince is not None and doc.get("modseq", 0) > unchangedsince:
                        refused.append(doc["uid"])
                        continue
                    new = _apply(doc.get("flags", []), mode, flags)
                    if new != doc.get("flags", []):
                        updates.append((doc, new))
                    else:
                        unchanged.append(FlagChange(doc["uid"], new, doc.get("modseq", 0)))
                if not updates:
                    break
                if reservation is None:
                    reservation = self.folders.reserve(folder_id, 0, modseqs=1)
                modseq = reservation.first_modseq
                ops = [
                    UpdateOne({"_id": doc["_id"], "modseq": doc.get("modseq")}, {"$set": {"flags": new, "modseq": modseq}})
                    for doc, new in updates
                ]
                result = self.c.messages.bulk_write(ops, ordered=False) if ops else None
                done = {doc["uid"] for doc, _ in updates}
                if result is not None and result.modified_count != len(ops):
                    # Some lost a race: see which carry our modseq now, retry the others.
                    won = {d["uid"] for d in self.c.messages.find(
                        {"_id": {"$in": [doc["_id"] for doc, _ in updates]}, "modseq": modseq}, {"uid": 1})}
                    lost = done - won
                    done = won
                    todo = ranges_of(lost)
                else:
                    todo = []
                delta = 0
                for doc, new in updates:
                    if doc["uid"] in done:
                        changed.append(FlagChange(doc["uid"], new, modseq))
                        delta += (SEEN in doc.get("flags", [])) - (SEEN in new)  # +1: became unseen
                if delta:
                    self.c.folders.update_one({"_id": folder_id}, {"$inc": {"unseen": delta}})
                if not todo:
                    break
        finally:
            if reservation is not None:
                self.folders.release([folder_id], reservation.token)  # type: ignore[arg-type]
        changed.sort(key=lambda change: change.uid)
        return changed, sorted(refused), unchanged

    # ------------------------------------------------------------------ copy / expunge
    def copy(self, source_id: ObjectId, ranges: UidRanges, target: dict) -> list[tuple[int, int]]:
        """COPY (RFC 3501 §6.4.7): new messages in ``target`` sharing the stored bytes.

        Returns ``(source uid, new uid)`` pairs for COPYUID (RFC 4315 §3). Works in
        batches of ``BATCH`` messages, so memory stays bounded however many are copied.
        """
        pairs: list[tuple[int, int]] = []
        batch: list[dict] = []
        for doc in self.find(source_id, ranges):
            batch.append(doc)
            if len(batch) >= BATCH:
                pairs += self._copy_batch(batch, target)
                batch = []
        if batch:
            pairs += self._copy_batch(batch, target)
        return pairs

    def _copy_batch(self, docs: list[dict], target: dict) -> list[tuple[int, int]]:
        """Take a reference on each body, then write the copies.

        The references come first, so a crash can leak bytes but never leave a
        message without them; a body whose last reference went meanwhile (its
        message was expunged by another session) is not copied.
        """
        refs: dict[ObjectId, int] = defaultdict(int)
        for doc in docs:
            refs[doc["blob"]] += 1
        firsts = [f"{blob}/0" for blob in refs]
        self.c.raw.bulk_write([UpdateOne({"_id": f"{b}/0"}, {"$inc": {"refs": n}}) for b, n in refs.items()], ordered=False)
        alive = {d["_id"] for d in self.c.raw.find({"_id": {"$in": firsts}, "refs": {"$gt": 0}}, {"_id": 1})}
        docs = [d for d in docs if f"{d['blob']}/0" in alive]
        if not docs:
            return []
        size = sum(d["size"] for d in docs)
        unseen = sum(1 for d in docs if SEEN not in d.get("flags", []))
        reservation = self.folders.reserve(target["_id"], len(docs), size, unseen)
        try:
            copies = []
            for offset, doc in enumerate(docs):
                copy = {k: v for k, v in doc.items() if k != "removing"}
                copy.update(
                    _id=ObjectId(), folder=target["_id"], mailbox=target["mailbox"],
                    uid=reservation.first_uid + offset, modseq=reservation.first_modseq + offset,
                )
                copies.append(copy)
            self.c.messages.insert_many(copies, ordered=True)
        except Exception:
            self.folders.uncount(target["_id"], len(docs), size, unseen)
            raise
        finally:
            self.folders.release([target["_id"]], reservation.token)  # type: ignore[arg-type]
        return [(doc["uid"], copy["uid"]) for doc, copy in zip(docs, copies)]

    def expunge(self, folder_id: ObjectId, ranges: Optional[UidRanges] = None) -> list[int]:
        """Remove the \\Deleted messages (within ``ranges`` for UID EXPUNGE, RFC 4315 §2.1).

        Tombstones are written before the messages are deleted, and the bytes are
        released last: a crash part-way leaves mail in place, never lost.
        """
        query: dict = uid_query(folder_id, ranges) if ranges is not None else {"folder": folder_id}
        query["flags"] = "\\Deleted"
        docs = [
            d for d in self.c.messages.find(query, {"uid": 1, "flags": 1, "size": 1, "blob": 1})
            if ranges is None or in_ranges(d["uid"], ranges)
        ]
        if not docs:
            return []
        return self._remove(folder_id, docs)

    def remove(self, folder_id: ObjectId, ranges: UidRanges) -> list[int]:
        """Remove messages whatever their flags (the second half of MOVE, RFC 6851 §3.3)."""
        docs = list(self.find(folder_id, ranges, {"uid": 1, "flags": 1, "size": 1, "blob": 1}))
        return self._remove(folder_id, docs) if docs else []

    def _remove(self, folder_id: ObjectId, docs: list[dict]) -> list[int]:
        """Expunge ``docs``: claim them, write tombstones, delete, uncount, release bytes.

        Two sessions expunging the same messages at once must not both count them
        down and release their bytes: each message is first claimed with a guarded
        update, and a session works only on what it claimed. A claim left by a
        process that died is taken over after ``REMOVAL_CLAIM_SECONDS``.
        """
        token = ObjectId()
        stale = ObjectId.from_datetime(datetime.now(timezone.utc) - timedelta(seconds=REMOVAL_CLAIM_SECONDS))
        unclaimed = {"$or": [{"removing": {"$exists": False}}, {"removing": {"$lt": stale}}]}
        mine: list[dict] = []
        for start in range(0, len(docs), BATCH):
            ids = [d["_id"] for d in docs[start : start + BATCH]]
            self.c.messages.update_many({"_id": {"$in": ids}, **unclaimed}, {"$set": {"removing": token}})
            mine += self.c.messages.find(
                {"_id": {"$in": ids}, "removing": token}, {"uid": 1, "flags": 1, "size": 1, "blob": 1}
            )
        if not mine:
            return []
        reservation = self.folders.reserve(folder_id, 0, modseqs=1)
        try:
            now = datetime.now(timezone.utc)
            for start in range(0, len(mine), BATCH):
                batch = mine[start : start + BATCH]
                self.c.expunged.insert_many(
                    [{"folder": folder_id, "uid": d["uid"], "modseq": reservation.first_modseq, "at": now} for d in batch],
                    ordered=False,
                )
                self.c.messages.delete_many({"_id": {"$in": [d["_id"] for d in batch]}, "removing": token})
            size = sum(d["size"] for d in mine)
            unseen = sum(1 for d in mine if SEEN not in d.get("flags", []))
            self.folders.uncount(folder_id, len(mine), size, unseen)
        finally:
            self.folders.release([folder_id], reservation.token)  # type: ignore[arg-type]
        self.blobs.release((d["blob"], d["size"]) for d in mine)
        return sorted(d["uid"] for d in mine)

    def expunge_all(self, folder_id: ObjectId) -> list[int]:
        """Remove every message, with tombstones (DELETE of a folder that has children)."""
        docs = list(self.c.messages.find({"folder": folder_id}, {"uid": 1, "flags": 1, "size": 1, "blob": 1}))
        return self._remove(folder_id, docs) if docs else []

    def remove_all(self, folder_id: ObjectId) -> int:
        """Delete every message of a folder that is itself being deleted (no tombstones needed)."""
        docs = list(self.c.messages.find({"folder": folder_id}, {"blob": 1, "size": 1}))
        self.c.messages.delete_many({"folder": folder_id})
        self.blobs.release((d["blob"], d["size"]) for d in docs)
        return len(docs)


def _apply(current: list[str], mode: str, flags: Sequence[str]) -> list[str]:
    """The flag list after STORE ``mode`` FLAGS ``flags``; order kept, no duplicates.

    Flags compare case-insensitively (RFC 3501 §2.3.2: system flags; keywords too, as
    Dovecot and Cyrus do); a flag keeps the spelling it was first stored with.
    """
    if mode == "+":
        have = {f.lower() for f in current}
        added = [f for f in _unique(flags) if f.lower() not in have]
        return current + added
    if mode == "-":
        drop = {f.lower() for f in flags}
        return [f for f in current if f.lower() not in drop]
    return _unique(flags)


def _unique(flags: Sequence[str]) -> list[str]:
    seen: set[str] = set()
    result = []
    for flag in flags:
        if flag.lower() not in seen:
            seen.add(flag.lower())
            result.append(flag)
    return result
