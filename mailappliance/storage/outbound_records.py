"""Reading the outbound side for the API: the queue (``emails``), the delivery records
(``successful_emails``, ``bounced_emails``) and the numbers the dashboard polls.

Costs on the embedded server (shared/embedded-db.md) shape every read here:

* ``find().sort().limit()`` reads every match before the limit, so newest-first pages
  are read by **time windows going back from now** on an indexed time key
  (:func:`newest_first`): the ``_id`` of the records and of ``incoming_emails`` (ObjectIds
  made at the event), ``created_at`` of ``emails``. A first page costs what the newest
  few windows hold, not the whole collection.
* Counts of a time range are ``_id`` ranges (``ObjectId.from_datetime``), so "the last
  24 hours" and "the last 60 minutes" cost what they hold, not the collection's size.

Every public method raises :class:`~mailappliance.storage.queue.QueueStoreError` for a
database failure, so the web layer never sees pymongo.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

from bson import ObjectId

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mongo import Collections
from mailappliance.storage.queue import DEFERRED, MESSAGE_STATUSES, QUEUED, _Translating, utcnow

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
OBJECT_ID_END = datetime(2106, 2, 7, tzinfo=timezone.utc)  # 32-bit seconds run out here
FIRST_WINDOW = timedelta(seconds=2)
STATS_MINUTES = 60
STATS_DAY = timedelta(hours=24)

# What a list item of ``emails`` leaves out: the attempt history, the lease, report bookkeeping.
SUMMARY_PROJECTION = {
    "history": 0,
    "lease": 0,
    "lease_owner": 0,
    "completed_lease": 0,
    "successful_ids": 0,
    "bounced_ids": 0,
    "dsn_pending_for": 0,
    "dsn_message_ids": 0,
}
EMAIL_SORTS = ("created_at", "-created_at", "updated_at", "-updated_at", "next_attempt_at", "-next_attempt_at")
LIVE = {"superseded": {"$ne": True}}  # records of an attempt whose result was lost are left out


@dataclass
class EmailQuery:
    """Filters of ``GET /api/emails``; ``since`` inclusive, ``until`` exclusive, on ``created_at``."""

    status: Optional[str] = None
    sender: Optional[str] = None
    recipient: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    sort: str = "-created_at"


@dataclass
class RecordQuery:
    """Filters of the delivery record lists; the time range is the delivery (or bounce) time."""

    recipient: Optional[str] = None
    bounce_type: Optional[str] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None


def clamp(when: datetime) -> datetime:
    """A time inside what ObjectIds and BSON dates can hold (naive means UTC)."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    try:
        when = when.astimezone(timezone.utc)
    except OverflowError:  # year 1 or 9999 with an offset
        return EPOCH if when.year < 1970 else OBJECT_ID_END
    return min(max(when, EPOCH), OBJECT_ID_END)


def id_at(when: datetime, round_up: bool = False) -> ObjectId:
    """The smallest ObjectId made at ``when``'s second (the next second's with ``round_up``
    when ``when`` has a fraction), so ``$gte``/``$lt`` on it bound a time range."""
    when = clamp(when)
    if round_up and when.microsecond and when < OBJECT_ID_END:
        when = when.replace(microsecond=0) + timedelta(seconds=1)
    return ObjectId.from_datetime(when)


def contains(text: str) -> dict:
    """Case-insensitive "contains" on an address field (a whole address or a part: a domain)."""
    return {"$regex": re.escape(text), "$options": "i"}


def newest_first(
    collection,
    query: dict,
    key: str,
    skip: int,
    limit: int,
    projection: Optional[dict] = None,
    since: Optional[datetime] = None,
    until: Optional[datetime] = None,
) -> list[dict]:
    """``find(query).sort(key, -1).skip(skip).limit(limit)`` read by windows of an indexed
    time ``key`` (``_id`` ObjectIds or a date), newest first.

    The first window is everything from a moment ago on (later times included, in case
    of clock skew); each older window is twice as wide as the one before, until enough
    documents were read or ``since`` (else 1970) is passed. Only what the windows hold is
    read, which for a first page is a few recent seconds or minutes.
    """
    wanted = skip + limit
    now = utcnow()
    floor = clamp(since) if since is not None else EPOCH
    top = clamp(until) if until is not None else None
    hi = min(top, now) if top is not None else now
    lo = max(floor, hi - FIRST_WINDOW)
    width = FIRST_WINDOW
    found: list[dict] = []
    upper: Optional[datetime] = top  # None: no upper bound for the first window
    while True:
        bound: dict[str, Any] = {"$gte": _key_value(key, lo)}
        if upper is not None:
            bound["$lt"] = _key_value(key, upper, round_up=True)
        docs = list(collection.find({**query, key: bound}, projection))
        docs.sort(key=lambda d: (d.get(key) or EPOCH, d["_id"]) if key != "_id" else d["_id"], reverse=True)
        found.extend(docs)
        if len(found) >= wanted or lo <= floor:
            break
        upper = lo
        width = width * 2
        lo = max(floor, lo - width)
    return found[skip:wanted]


def _key_value(key: str, when: datetime, round_up: bool = False) -> Any:
    if key == "_id":
        return id_at(when, round_up)
    return clamp(when)


class OutboundRecords(metaclass=_Translating):
    """The read side of the outbound queue and its outcome records."""

    def __init__(self, collections: Collections, blobs: BlobStore) -> None:
        self.c = collections
        self.blobs = blobs

    # ------------------------------------------------------------------ emails (the queue)
    def emails_page(self, q: EmailQuery, page: int, limit: int) -> tuple[list[dict], int]:
        """One page of queue summaries and the number of matches."""
        query: dict[str, Any] = {}
        if q.status:
            query["status"] = q.status
        if q.sender:
            query["from"] = contains(q.sender)
        if q.recipient:
            query["to"] = contains(q.recipient)
        skip = (page - 1) * limit
        ranged = dict(query)
        if q.since is not None or q.until is not None:
            span: dict[str, Any] = {}
            if q.since is not None:
                span["$gte"] = clamp(q.since)
            if q.until is not None:
                span["$lt"] = clamp(q.until)
            ranged["created_at"] = span
        if q.sort == "-created_at":
            items = newest_first(self.c.outgoing, query, "created_at", skip, limit, SUMMARY_PROJECTION, q.since, q.until)
        else:
            field_name = q.sort.lstrip("-")
            direction = -1 if q.sort.startswith("-") else 1
            cursor = self.c.outgoing.find(ranged, SUMMARY_PROJECTION).sort([(field_name, direction), ("_id", direction)])
            items = list(cursor.skip(skip).limit(limit))
        total = self.c.outgoing.count_documents(ranged) if ranged else self.c.outgoing.estimated_document_count()
        return items, total

    def email(self, email_id: ObjectId) -> Optional[dict]:
        """The whole queue document (with its attempt history)."""
        return self.c.outgoing.find_one({"_id": email_id}, {"lease": 0, "completed_lease": 0})

    def outcomes_of(self, email_id: ObjectId) -> tuple[list[dict], list[dict]]:
        """The message's delivery and bounce records, oldest first (``email_id`` index)."""
        successful = sorted(self.c.successful.find({"email_id": email_id, **LIVE}), key=lambda d: d["_id"])
        bounced = sorted(self.c.bounced.find({"email_id": email_id, **LIVE}), key=lambda d: d["_id"])
        return successful, bounced

    def raw(self, doc: dict) -> Optional[bytes]:
        """The message's stored bytes; None when they are gone (deleted meanwhile, damaged)."""
        try:
            return self.blobs.read(doc["blob"], doc["size"])
        except (KeyError, ValueError):
            return None

    # ------------------------------------------------------------------ delivery records
    def successful_page(self, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        return self._records_page(self.c.successful, "delivered_at", q, page, limit)

    def bounced_page(self, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        return self._records_page(self.c.bounced, "bounced_at", q, page, limit)

    def successful_record(self, record_id: ObjectId) -> Optional[dict]:
        return self.c.successful.find_one({"_id": record_id})

    def bounced_record(self, record_id: ObjectId) -> Optional[dict]:
        return self.c.bounced.find_one({"_id": record_id})

    def _records_page(self, collection, at: str, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        """Newest first. A record's ``_id`` is made with it, at ``at``: the time range is an
        ``_id`` range (the index), refined by ``at`` itself for sub-second bounds."""
        query: dict[str, Any] = dict(LIVE)
        if q.recipient:
            query["recipient"] = contains(q.recipient)
        if q.bounce_type:
            query["bounce_type"] = q.bounce_type
        exact: dict[str, Any] = {}
        if q.since is not None:
            exact["$gte"] = clamp(q.since)
        if q.until is not None:
            exact["$lt"] = clamp(q.until)
        if exact:
            query[at] = exact
        items = newest_first(collection, query, "_id", (page - 1) * limit, limit, None, q.since, q.until)
        counted = dict(query)
        if exact:
            span: dict[str, Any] = {}
            if q.since is not None:
                span["$gte"] = id_at(q.since)
            if q.until is not None:
                span["$lt"] = id_at(q.until, round_up=True)
            counted["_id"] = span
        if len(counted) == 1 and not q.recipient and not q.bounce_type:
            # Only "not superseded": superseded records are rare (a lost lease), the
            # estimate is the honest cheap answer for a collection that only grows.
            total = collection.estimated_document_count()
        else:
            total = collection.count_documents(counted)
        return items, total

    # ------------------------------------------------------------------ the numbers
    def stats(self, now: Optional[datetime] = None) -> dict[str, Any]:
        """Queue counts, record counts, the last 24 hours and the last 60 minutes by minute."""
        now = now or utcnow()
        queue: dict[str, int] = {s: self.c.outgoing.count_documents({"status": s}) for s in MESSAGE_STATUSES}
        queue["due"] = sum(
            self.c.outgoing.count_documents({"status": s, "next_attempt_at": {"$lte": now}}) for s in (QUEUED, DEFERRED)
        )
        queue["total"] = self.c.outgoing.estimated_document_count()
        records = {
            "incoming": self.c.incoming.estimated_document_count(),
            "successful": self.c.successful.estimated_document_count(),
            "bounced": self.c.bounced.estimated_document_count(),
        }
        day = {"_id": {"$gte": id_at(now - STATS_DAY)}}
        first_minute = (now - timedelta(minutes=STATS_MINUTES - 1)).replace(second=0, microsecond=0)
        hour = {"_id": {"$gte": ObjectId.from_datetime(first_minute)}}
        bounce_types = Counter(
            d.get("bounce_type") or "unknown" for d in self.c.bounced.find({**day, **LIVE}, {"bounce_type": 1, "_id": 0})
        )
        minutes = [first_minute + timedelta(minutes=n) for n in range(STATS_MINUTES)]
        series = {m: {"received": 0, "delivered": 0, "bounced": 0} for m in minutes}
        for name, collection, extra in (
            ("received", self.c.incoming, {}),
            ("delivered", self.c.successful, LIVE),
            ("bounced", self.c.bounced, LIVE),
        ):
            for doc in collection.find({**hour, **extra}, {"_id": 1}):
                minute = doc["_id"].generation_time.replace(second=0)
                if minute in series:
                    series[minute][name] += 1
        return {
            "queue": queue,
            "records": records,
            "last_24h": {
                "received": self.c.incoming.count_documents(day),
                "delivered": self.c.successful.count_documents({**day, **LIVE}),
                "bounced": sum(bounce_types.values()),
            },
            "per_minute": [{"minute": m, **series[m]} for m in minutes],
            "bounce_types": dict(bounce_types),
            "generated_at": now,
        }
