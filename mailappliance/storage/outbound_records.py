"""Reading the outbound side for the API: the queue (``emails``), the delivery records
(``successful_emails``, ``bounced_emails``) and the numbers the dashboard polls.

Costs on the embedded server shape every read here. Measured with 20,000 documents per
collection (bench/api_reads.py): a range on a secondary date index reads only what it
holds (0.7 ms for a minute, 12 ms for an hour of 400), while a range on ``_id`` is read
as a collection scan even with a hint (270 ms for 3 documents), ``find().sort().limit()``
reads every match (1.4 s), ``count_documents`` costs ~20 us per match and
``estimated_document_count`` ~100 ms. Hence:

* every time range is a range on a date index: ``emails.created_at``,
  ``incoming_emails.received_at``, ``successful_emails.delivered_at``,
  ``bounced_emails.bounced_at`` (``mongo.INDEXES``);
* newest-first pages are read by time windows going back from now
  (:func:`~mailappliance.storage.time_windows.newest_first`), so a first page costs what
  the newest windows hold; where each query's page ended is remembered, so a repeated
  read (the dashboard polls) costs the page and what arrived since, even when the page
  sits in a burst (a window is read whole: no read stops early on the embedded server);
* list totals are exact (``count_documents``, or the collection's count when unfiltered)
  and counted first: the windows stop once every match was read. A status filter matching
  few messages (``STATUS_READ_MAX``) reads them through the ``{status, next_attempt_at}``
  index in one go; a status matching many is checked on what the windows return;
* the last 24 hours are counted by hour: an hour that ended a while ago is counted once
  and remembered (:class:`HourCounts`), so a poll counts about two hours, not 24. An hour
  is settled once no outcome record can still be written into it: records are stamped at
  outcome time and written while the attempt's lease lasts (``QUEUE_LEASE``), so it
  settles ``lease + SETTLE_MARGIN`` after it ends;
* in the stats, the counts that grow without bound (finished messages, record totals)
  are kept for ``SLOW_COUNTS_SECONDS`` and forgotten when this process retries or deletes
  a message. ``queue.total`` is the number of messages counted with them (every status,
  created before the counts were taken) plus the messages created since, so it never
  dips while messages move from an active status to a finished one.

Every public method raises :class:`~mailappliance.storage.queue.QueueStoreError` for a
database failure, so the web layer never sees pymongo.
"""
from __future__ import annotations

import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Optional

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mongo import Collections
from mailappliance.storage.queue import BOUNCED, DEFERRED, MESSAGE_STATUSES, PARTIAL, QUEUED, SENDING, SENT, _Translating, utcnow
from mailappliance.storage.time_windows import EPOCH, END_OF_TIME, PageEnds, clamp, newest_first, newest_key  # noqa: F401 (re-exported)

STATS_MINUTES = 60
STATS_HOURS = 24
HOUR = timedelta(hours=1)
DEFAULT_LEASE_SECONDS = 300.0  # QUEUE_LEASE's default
SETTLE_MARGIN = timedelta(minutes=10)  # beyond the lease: clock skew, write retries
SLOW_COUNTS_SECONDS = 30.0
ACTIVE = (QUEUED, SENDING, DEFERRED)  # few: counted at every call
# A status filter matching at most this many messages reads them through the status index
# (one read of what the exact total counted anyway) rather than by windows of created_at.
STATUS_READ_MAX = 2000
FINISHED = (SENT, PARTIAL, BOUNCED)  # grow without bound: counted every SLOW_COUNTS_SECONDS

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


def contains(text: str) -> dict:
    """Case-insensitive "contains" on an address field (a whole address or a part: a domain)."""
    return {"$regex": re.escape(text), "$options": "i"}


def time_range(since: Optional[datetime], until: Optional[datetime]) -> dict:
    span: dict[str, Any] = {}
    if since is not None:
        span["$gte"] = clamp(since)
    if until is not None:
        span["$lt"] = clamp(until)
    return span


class HourCounts:
    """What one collection holds per hour of an indexed date ``key``: hours that ended more
    than ``settle`` ago are read once and remembered (this process's memory, a day's worth),
    the others are read at every call."""

    def __init__(
        self, collection, key: str, query: dict, measure: Callable[[Any, dict], Counter], settle: timedelta = SETTLE_MARGIN
    ) -> None:
        self.collection = collection
        self.key = key
        self.query = query
        self.measure = measure
        self.settle = settle
        self.settled: dict[datetime, Counter] = {}
        self.lock = threading.Lock()

    def between(self, start: datetime, end: datetime, now: datetime) -> Counter:
        total: Counter = Counter()
        hour = start.replace(minute=0, second=0, microsecond=0)
        while hour < end:
            lo, hi = max(start, hour), min(end, hour + HOUR)
            whole = lo == hour and hi == hour + HOUR
            if whole and hour in self.settled:
                total.update(self.settled[hour])
            else:
                counted = self.measure(self.collection, {**self.query, self.key: {"$gte": lo, "$lt": hi}})
                if whole and hi + self.settle <= now:
                    with self.lock:
                        self.settled[hour] = counted
                total.update(counted)
            hour += HOUR
        with self.lock:
            for old in [h for h in self.settled if h < start - HOUR]:
                del self.settled[old]
        return total


def _count(collection, query: dict) -> Counter:
    return Counter({"n": collection.count_documents(query)})


def _bounce_types(collection, query: dict) -> Counter:
    return Counter(d.get("bounce_type") or "unknown" for d in collection.find(query, {"bounce_type": 1, "_id": 0}))


class OutboundRecords(metaclass=_Translating):
    """The read side of the outbound queue and its outcome records.

    ``lease_seconds`` is the queue's lease (``Settings.queue_lease``, ``OutboundQueue.lease``):
    outcome records can be written that long after the time they are stamped with."""

    def __init__(self, collections: Collections, blobs: BlobStore, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.c = collections
        self.blobs = blobs
        # Incoming records are written when received (stamped then): the margin is enough.
        self.settle = timedelta(seconds=lease_seconds) + SETTLE_MARGIN
        self._received = HourCounts(collections.incoming, "received_at", {}, _count, SETTLE_MARGIN)
        self._delivered = HourCounts(collections.successful, "delivered_at", LIVE, _count, self.settle)
        self._bounced = HourCounts(collections.bounced, "bounced_at", LIVE, _bounce_types, self.settle)
        self._slow: dict[str, Any] = {}
        self._slow_until = 0.0
        self.page_ends = PageEnds()

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
        span = time_range(q.since, q.until)
        if span:
            ranged["created_at"] = span
        total = self.c.outgoing.count_documents(ranged) if ranged else self.c.outgoing.estimated_document_count()
        matches = total if ranged else None  # an estimate cannot end the walk
        if matches is not None and matches <= skip:
            items = []
        elif q.sort == "-created_at" and q.status and total <= STATUS_READ_MAX:
            items = self._by_status(query, q, skip, limit)
        elif q.sort == "-created_at":
            # The status is checked on what the windows return (see time_windows).
            sent = {f: v for f, v in query.items() if f != "status"}
            where = {"status": q.status} if q.status else None
            items = newest_first(
                self.c.outgoing, sent, "created_at", skip, limit, SUMMARY_PROJECTION, q.since, q.until, matches, self.page_ends, where
            )
        else:
            field_name = q.sort.lstrip("-")
            direction = -1 if q.sort.startswith("-") else 1
            cursor = self.c.outgoing.find(ranged, SUMMARY_PROJECTION).sort([(field_name, direction), ("_id", direction)])
            items = list(cursor.skip(skip).limit(limit))
        return items, total

    def _by_status(self, query: dict, q: EmailQuery, skip: int, limit: int) -> list[dict]:
        """What :func:`newest_first` returns, read in one go through the status index: every
        message of the status within the bounds (few), sorted here."""
        bound: dict[str, Any] = {"$gte": clamp(q.since) if q.since is not None else EPOCH}
        if q.until is not None:
            bound["$lt"] = clamp(q.until)
        # No hint: the planner takes the status index itself (1.8 ms for 40 of 20,000);
        # a hint makes the embedded server read the whole index (290 ms).
        docs = list(self.c.outgoing.find({**query, "created_at": bound}, SUMMARY_PROJECTION))
        docs.sort(key=newest_key("created_at"), reverse=True)
        return docs[skip : skip + limit]

    def email(self, email_id: Any) -> Optional[dict]:
        """The whole queue document (with its attempt history)."""
        return self.c.outgoing.find_one({"_id": email_id}, {"lease": 0, "completed_lease": 0})

    def outcomes_of(self, email_id: Any) -> tuple[list[dict], list[dict]]:
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

    def changed(self) -> None:
        """A message was retried or deleted: count the finished ones again at the next call."""
        self._slow_until = 0.0

    # ------------------------------------------------------------------ delivery records
    def successful_page(self, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        return self._records_page(self.c.successful, "delivered_at", q, page, limit)

    def bounced_page(self, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        return self._records_page(self.c.bounced, "bounced_at", q, page, limit)

    def successful_record(self, record_id: Any) -> Optional[dict]:
        return self.c.successful.find_one({"_id": record_id})

    def bounced_record(self, record_id: Any) -> Optional[dict]:
        return self.c.bounced.find_one({"_id": record_id})

    def _records_page(self, collection, at: str, q: RecordQuery, page: int, limit: int) -> tuple[list[dict], int]:
        """Newest first by ``at`` (the delivery or bounce time, indexed)."""
        query: dict[str, Any] = dict(LIVE)
        if q.recipient:
            query["recipient"] = contains(q.recipient)
        if q.bounce_type:
            query["bounce_type"] = q.bounce_type
        span = time_range(q.since, q.until)
        matches: Optional[int] = None
        if query == LIVE and not span:
            # Superseded records are rare (a lease lost mid-attempt): the total kept is
            # the honest cheap answer for a collection that only grows.
            total = collection.estimated_document_count()
        else:
            total = matches = collection.count_documents({**query, at: span} if span else query)
        items = newest_first(collection, query, at, (page - 1) * limit, limit, None, q.since, q.until, matches, self.page_ends)
        return items, total

    # ------------------------------------------------------------------ the numbers
    def _status_counts(self) -> dict[str, int]:
        counts = {s: self.c.outgoing.count_documents({"status": s}) for s in ACTIVE}
        slow = self._slow_counts()
        counts.update({s: slow[s] for s in FINISHED})
        return counts

    def _slow_counts(self) -> dict[str, Any]:
        """Counts that read a whole collection or status, kept for ``SLOW_COUNTS_SECONDS``:
        the messages per status created before ``as_of`` (all of them, for the total),
        and the record totals."""
        if time.monotonic() >= self._slow_until:
            as_of = utcnow()
            slow: dict[str, Any] = {
                s: self.c.outgoing.count_documents({"status": s, "created_at": {"$lt": as_of}}) for s in MESSAGE_STATUSES
            }
            slow["total"], slow["as_of"] = sum(slow[s] for s in MESSAGE_STATUSES), as_of
            for name, collection in (("incoming", self.c.incoming), ("successful", self.c.successful), ("bounced", self.c.bounced)):
                slow["records/" + name] = collection.estimated_document_count()
            self._slow, self._slow_until = slow, time.monotonic() + SLOW_COUNTS_SECONDS
        return self._slow

    def stats(self, now: Optional[datetime] = None) -> dict[str, Any]:
        """Queue counts, record counts, the last 24 hours and the last 60 minutes by minute."""
        now = now or utcnow()
        queue: dict[str, int] = {s: 0 for s in MESSAGE_STATUSES}
        queue.update(self._status_counts())
        queue["due"] = sum(
            self.c.outgoing.count_documents({"status": s, "next_attempt_at": {"$lte": now}}) for s in (QUEUED, DEFERRED)
        )
        slow = self._slow_counts()
        # The messages counted with the finished ones plus those created since (a range on
        # the created_at index): a message moving from active to finished leaves it as is.
        queue["total"] = slow["total"] + self.c.outgoing.count_documents({"created_at": {"$gte": slow["as_of"]}})
        day_start = now - timedelta(hours=STATS_HOURS)
        end = now + timedelta(microseconds=1)
        bounce_types = self._bounced.between(day_start, end, now)
        first_minute = (now - timedelta(minutes=STATS_MINUTES - 1)).replace(second=0, microsecond=0)
        minutes = [first_minute + timedelta(minutes=n) for n in range(STATS_MINUTES)]
        series = {m: {"received": 0, "delivered": 0, "bounced": 0} for m in minutes}
        for name, collection, key, extra in (
            ("received", self.c.incoming, "received_at", {}),
            ("delivered", self.c.successful, "delivered_at", LIVE),
            ("bounced", self.c.bounced, "bounced_at", LIVE),
        ):
            for doc in collection.find({**extra, key: {"$gte": first_minute, "$lt": end}}, {key: 1, "_id": 0}):
                minute = clamp(doc[key]).replace(second=0, microsecond=0)
                if minute in series:
                    series[minute][name] += 1
        return {
            "queue": queue,
            "records": {name: slow["records/" + name] for name in ("incoming", "successful", "bounced")},
            "last_24h": {
                "received": self._received.between(day_start, end, now)["n"],
                "delivered": self._delivered.between(day_start, end, now)["n"],
                "bounced": sum(bounce_types.values()),
            },
            "per_minute": [{"minute": m, **series[m]} for m in minutes],
            "bounce_types": dict(bounce_types),
            "generated_at": now,
        }
