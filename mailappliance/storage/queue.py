"""The outbound queue (``emails``): claiming due work under a lease, recording outcomes,
manual retry and delete.

Claiming (never the same message by two runners at once, nothing lost when one dies):

* A claim is a guarded ``update_one`` per candidate (sent together in one ``bulk_write``):
  the filter repeats the candidate's ``status``, ``next_attempt_at`` and ``lease`` as read,
  so of two runners racing for it exactly one matches. The winner sets ``status:
  sending``, a fresh ``lease`` token, ``lease_owner`` and ``lease_until``, and moves
  ``next_attempt_at`` to ``lease_until`` - so work whose runner died is found again by
  the same ``{status, next_attempt_at}`` index once the lease has expired. Runners renew
  the leases of what they hold; every later write is guarded by the lease token.
* Candidates are read by **bounded time windows** on the ``{status, next_attempt_at}``
  index (:class:`DueScanner`), not by ``find().limit()``: the embedded server reads every
  match of a query before applying the limit (shared/embedded-db.md; measured here, 400 ms
  for 50 of 20,000 due messages, 2 ms for a window holding 50). ``$in`` on ``status``
  would scan the collection, so each status has its own scanner.

Finishing: :meth:`OutboundQueue.finish` writes the delivery records (``successful_emails``,
``bounced_emails``) and owed bounce reports first, then the guarded updates of the
originals in one journaled ``bulk_write``. Each update stamps ``completed_lease`` with the
attempt's lease token, so whether it applied is read back, not guessed (a retried finish
after an error is idempotent). A completion whose update matched nothing (lease taken
over, message deleted) is "lost": its records are marked ``superseded`` and its owed
report dropped. A crash between the remote server's 250 and that write leaves the message
``sending``: it is delivered again after the lease expires (at most the ones in flight).

Every public method raises :class:`QueueStoreError` for a database failure, so services
never see pymongo.

Manual retry and delete never touch a message being delivered: they set
``retry_requested`` / ``delete_requested`` instead, which the lease holder applies when it
finishes (the finishing update's filter excludes flagged messages).
"""
from __future__ import annotations

import functools
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable, Iterator, Optional, TypeVar

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError, PyMongoError
from pymongo.write_concern import WriteConcern

from mailappliance.storage.blobs import CHUNK_SIZE, BlobStore, blob_documents
from mailappliance.storage.mongo import Collections

QUEUED, SENDING, DEFERRED, SENT, BOUNCED, PARTIAL = "queued", "sending", "deferred", "sent", "bounced", "partial"
MESSAGE_STATUSES = (QUEUED, SENDING, DEFERRED, SENT, BOUNCED, PARTIAL)
PENDING = (QUEUED, DEFERRED)  # recipient statuses still to be delivered
CLAIMABLE = (SENDING, DEFERRED, QUEUED)  # SENDING: only once its lease has expired
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
MIN_WINDOW = timedelta(milliseconds=1)
MAX_WINDOW = timedelta(days=3650)
FIRST_WINDOW = timedelta(seconds=1)
FULL_SWEEP_SECONDS = 60.0  # look back to the epoch this often (mail stored late, clock skew)
LATE_SLACK = timedelta(seconds=120)  # otherwise a sweep starts this far before "now"
BUFFER_SECONDS = 5.0  # candidates read but not yet tried are used for this long
CANDIDATE_FIELDS = {"_id": 1, "status": 1, "next_attempt_at": 1, "lease": 1}
HISTORY_KEPT = 20
PREFETCH_BYTES = 16 * 1024 * 1024  # bytes of claimed messages read with the claim
_MAX_FLAG_RACES = 10


class QueueStoreError(RuntimeError):
    """The database failed (unreachable, timed out, refused a write)."""


@contextmanager
def store_errors() -> Iterator[None]:
    """Turn a database failure inside the block into :class:`QueueStoreError`."""
    try:
        yield
    except PyMongoError as exc:
        raise QueueStoreError(str(exc) or exc.__class__.__name__) from exc


_F = TypeVar("_F", bound=Callable[..., Any])


def _translated(method: _F) -> _F:
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with store_errors():
            return method(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def _unsynced(collection):
    """The collection with writes acknowledged before the journal sync (losing one is harmless)."""
    document = dict(collection.write_concern.document)
    document["j"] = False
    return collection.with_options(write_concern=WriteConcern(**document))


class DueScanner:
    """Due messages of one status, read by windows of ``next_attempt_at`` sized to hold a batch.

    The window starts at a floor (the earliest due time seen) and grows over empty ranges;
    when a window holds far more than wanted, the next one is cut to the density found.
    Claimed messages leave the status, so reading the same window again costs only what
    is left in it. What a read returns beyond the batch is kept for the next claims (for a
    few seconds): many messages due at the same millisecond - a burst, or a backlog
    queued at once - are read once, not once per batch.
    """

    def __init__(self, collection, status: str) -> None:
        self.collection = collection
        self.status = status
        self.floor = EPOCH
        self.width = FIRST_WINDOW
        self.next_full_sweep = time.monotonic() + FULL_SWEEP_SECONDS
        self.queries = 0
        self._buffer: list[dict] = []
        self._buffer_expires = 0.0

    def take(self, now: datetime, want: int) -> list[dict]:
        """Up to ``want`` candidates, in random order within what one read returned (so
        runners sharing the database mostly try different messages)."""
        if self._buffer and time.monotonic() > self._buffer_expires:
            self._buffer = []
        if not self._buffer:
            self._buffer = self.candidates(now, want)
            random.shuffle(self._buffer)
            self._buffer_expires = time.monotonic() + BUFFER_SECONDS
        taken, self._buffer = self._buffer[:want], self._buffer[want:]
        return taken

    def candidates(self, now: datetime, want: int) -> list[dict]:
        if time.monotonic() >= self.next_full_sweep:
            self.floor, self.width = EPOCH, FIRST_WINDOW
            self.next_full_sweep = time.monotonic() + FULL_SWEEP_SECONDS
        lo = self.floor
        end = now + MIN_WINDOW  # "$lt end" includes now
        while lo < end:
            hi = min(lo + self.width, end)
            self.queries += 1
            docs = list(self.collection.find({"status": self.status, "next_attempt_at": {"$gte": lo, "$lt": hi}}, CANDIDATE_FIELDS))
            if docs:
                docs.sort(key=lambda d: d["next_attempt_at"])
                self.floor = lo
                if len(docs) > 4 * want:
                    # Size the next window to about twice what is wanted.
                    edge = docs[min(len(docs) - 1, 2 * want)]["next_attempt_at"]
                    self.width = max(MIN_WINDOW, edge - lo)
                elif len(docs) < want:
                    self.width = min(MAX_WINDOW, self.width * 2)
                return docs
            lo = hi
            self.width = min(MAX_WINDOW, self.width * 2)
        self.floor = max(EPOCH, (now - LATE_SLACK).replace(microsecond=0))
        return []


@dataclass
class Completion:
    """What one delivery attempt writes back: the records, then the guarded update."""

    email_id: ObjectId
    lease: ObjectId
    update: dict
    successful: list[dict] = field(default_factory=list)
    bounced: list[dict] = field(default_factory=list)
    report: Optional[dict] = None  # a bounce report owed to the (local) sender, ids chosen


class _Translating(type):
    """Wraps every public method of the class in :func:`store_errors`."""

    def __new__(mcs, name: str, bases: tuple, namespace: dict) -> "_Translating":
        for key, value in list(namespace.items()):
            if callable(value) and not key.startswith("_"):
                namespace[key] = _translated(value)
        return super().__new__(mcs, name, bases, namespace)


class OutboundQueue(metaclass=_Translating):
    def __init__(self, collections: Collections, blobs: BlobStore, lease_seconds: float = 300.0) -> None:
        self.c = collections
        self.blobs = blobs
        self.lease = timedelta(seconds=lease_seconds)
        self._fast = _unsynced(collections.outgoing)
        self.scanners = {status: DueScanner(collections.outgoing, status) for status in CLAIMABLE}

    # ------------------------------------------------------------------ claiming
    def claim(self, want: int, owner: str, exclude: frozenset = frozenset()) -> list[dict]:
        """Lease up to ``want`` due messages to ``owner``; returns them as now stored."""
        if want <= 0:
            return []
        now = utcnow()
        token = ObjectId()
        until = now + self.lease
        tried: list[ObjectId] = []
        for status in CLAIMABLE:
            need = want - len(tried)
            if need <= 0:
                break
            chosen = [d for d in self.scanners[status].take(now, need) if d["_id"] not in exclude]
            if not chosen:
                continue
            ops = [
                UpdateOne(
                    {"_id": d["_id"], "status": status, "next_attempt_at": d["next_attempt_at"], "lease": d.get("lease")},
                    {
                        "$set": {
                            "status": SENDING,
                            "lease": token,
                            "lease_owner": owner,
                            "lease_until": until,
                            "next_attempt_at": until,
                            "claimed_at": now,
                        }
                    },
                )
                for d in chosen
            ]
            self._fast.bulk_write(ops, ordered=False)
            tried.extend(d["_id"] for d in chosen)
        if not tried:
            return []
        won = list(self.c.outgoing.find({"_id": {"$in": tried}, "lease": token}))
        self._prefetch(won)
        return won

    def _prefetch(self, docs: list[dict]) -> None:
        """Read the bytes of small claimed messages in one query (``doc["raw"]``); one read
        per message costs about six times as much on the embedded server."""
        wanted: dict[str, dict] = {}
        budget = PREFETCH_BYTES
        for doc in docs:
            if doc.get("size", CHUNK_SIZE + 1) <= min(CHUNK_SIZE, budget):
                wanted[f"{doc['blob']}/0"] = doc
                budget -= doc["size"]
        if not wanted:
            return
        for chunk in self.c.raw.find({"_id": {"$in": list(wanted)}}, {"data": 1}):
            doc = wanted[chunk["_id"]]
            data = bytes(chunk["data"])
            if len(data) == doc["size"]:
                doc["raw"] = data

    def read_raw(self, doc: dict) -> bytes:
        """The message's bytes (prefetched by :meth:`claim` when small); KeyError when lost."""
        raw = doc.get("raw")
        return raw if raw is not None else self.blobs.read(doc["blob"], doc["size"])

    def renew(self, held: dict[ObjectId, ObjectId]) -> set[ObjectId]:
        """Extend the leases ``{email id: lease token}``; returns the ids still held (the
        others were taken over after expiring, or deleted)."""
        if not held:
            return set()
        until = utcnow() + self.lease
        result = self._fast.update_many(
            {"_id": {"$in": list(held)}, "lease": {"$in": list(set(held.values()))}},
            {"$set": {"lease_until": until, "next_attempt_at": until}},
        )
        if result.matched_count == len(held):
            return set(held)
        found = self.c.outgoing.find({"_id": {"$in": list(held)}}, {"lease": 1})
        return {d["_id"] for d in found if d.get("lease") == held[d["_id"]]}

    def release(self, held: dict[ObjectId, ObjectId]) -> int:
        """Give up leases (shutdown): the messages are due again at once, for any runner."""
        if not held:
            return 0
        now = utcnow()
        result = self.c.outgoing.update_many(
            {"_id": {"$in": list(held)}, "lease": {"$in": list(set(held.values()))}},
            {"$set": {"lease_until": now, "next_attempt_at": now}},
        )
        return result.modified_count

    # ------------------------------------------------------------------ finishing
    def finish(self, completions: list[Completion]) -> dict[ObjectId, str]:
        """Write records and guarded updates; returns ``{email id: "done" | "flagged" | "lost"}``.

        "flagged": a retry or delete was requested meanwhile; the lease is still held, call
        :meth:`finish_flagged`. "lost": the lease was taken over (or the message deleted).
        """
        if not completions:
            return {}
        successful = [r for c in completions for r in c.successful]
        bounced = [r for c in completions for r in c.bounced]
        # Owed reports are listed in their own small collection rather than by an index on
        # ``emails`` (a partial index costs every queue update ~15%, measured).
        reports = [c.report for c in completions if c.report]
        for collection, records in ((self.c.successful, successful), (self.c.bounced, bounced), (self.c.pending_reports, reports)):
            if records:
                _insert_ignoring_duplicates(_unsynced(collection), records)
        ops = [
            UpdateOne(
                {"_id": c.email_id, "lease": c.lease, "retry_requested": {"$ne": True}, "delete_requested": {"$ne": True}},
                _stamped(c),
            )
            for c in completions
        ]
        result = self.c.outgoing.bulk_write(ops, ordered=False)  # journaled: one sync for the batch
        outcome = {c.email_id: "done" for c in completions}
        if result.modified_count != len(ops):
            # Some filters did not match: read back which updates are in place (also those
            # applied by an earlier try whose answer was lost), which still hold our lease
            # (flagged for retry/delete meanwhile) and which were lost.
            leases = {c.email_id: c.lease for c in completions}
            found = {d["_id"]: d for d in self.c.outgoing.find({"_id": {"$in": list(leases)}}, {"lease": 1, "completed_lease": 1})}
            for email_id, lease in leases.items():
                doc = found.get(email_id)
                if doc is not None and doc.get("completed_lease") == lease:
                    outcome[email_id] = "done"
                elif doc is not None and doc.get("lease") == lease:
                    outcome[email_id] = "flagged"
                else:
                    outcome[email_id] = "lost"
        return outcome

    def supersede(self, completion: Completion) -> None:
        """A completion was lost: mark its records superseded, drop the report it owed."""
        for collection, records in ((self.c.successful, completion.successful), (self.c.bounced, completion.bounced)):
            if records:
                collection.update_many({"_id": {"$in": [r["_id"] for r in records]}}, {"$set": {"superseded": True}})
        if completion.report:
            self.c.pending_reports.delete_one({"_id": completion.report["_id"]})

    def finish_flagged(self, completion: Completion, requeue_fields: dict) -> str:
        """Apply a retry or delete requested while ``completion``'s delivery ran."""
        doc = self.c.outgoing.find_one({"_id": completion.email_id, "lease": completion.lease})
        if doc is None:
            return "lost"
        if doc.get("delete_requested"):
            if self.c.outgoing.delete_one({"_id": doc["_id"], "lease": completion.lease}).deleted_count:
                self.blobs.release([(doc["blob"], doc["size"])])
                return "deleted"
            return "lost"
        update = {k: dict(v) for k, v in _stamped(completion).items()}
        update.setdefault("$set", {}).update(requeue_fields)
        update.setdefault("$unset", {})["retry_requested"] = ""
        result = self.c.outgoing.update_one({"_id": doc["_id"], "lease": completion.lease}, update)
        return "retried" if result.modified_count else "lost"

    def report_written(self, report: dict, stored: bool) -> None:
        """The owed ``report`` is in the sender's INBOX (``stored``), or none is owed."""
        update: dict[str, Any] = {"$pullAll": {"dsn_pending_for": report["addresses"]}, "$set": {"dsn": "sent" if stored else "none"}}
        if stored:
            update["$addToSet"] = {"dsn_message_ids": report["message_id"]}
        self.c.outgoing.update_one({"_id": report["email_id"]}, update)
        self.c.pending_reports.delete_one({"_id": report["_id"]})

    def report_stored(self, report: dict) -> bool:
        """True when the report's message is already stored (a write whose end was lost)."""
        return self.c.messages.find_one({"_id": report["message_id"]}, {"_id": 1}) is not None

    def claim_report(self, report_id: Any, seconds: float = 300.0) -> Optional[dict]:
        """Take the job of writing one owed report (so two processes never both write it)."""
        now = utcnow()
        taken = self.c.pending_reports.find_one_and_update(
            {"_id": report_id, "$or": [{"claimed_until": None}, {"claimed_until": {"$lte": now}}]},
            {"$set": {"claimed_until": now + timedelta(seconds=seconds)}},
        )
        return taken

    def pending_reports(self, limit: int = 1000) -> list[Any]:
        """Reports still to be put into a sender's INBOX."""
        return [d["_id"] for d in self.c.pending_reports.find({}, {"_id": 1}).limit(limit)]

    # ------------------------------------------------------------------ operator actions
    def get(self, email_id: ObjectId) -> Optional[dict]:
        return self.c.outgoing.find_one({"_id": email_id})

    def retry(self, email_id: ObjectId) -> str:
        """Queue again every recipient not yet delivered: "queued", "scheduled" (it is being
        delivered: applied when that attempt ends), "nothing" (all delivered) or "not found"."""
        for _ in range(_MAX_FLAG_RACES):
            doc = self.get(email_id)
            if doc is None:
                return "not found"
            if doc["status"] == SENDING:
                flagged = self.c.outgoing.update_one(
                    {"_id": email_id, "status": SENDING, "lease": doc.get("lease")}, {"$set": {"retry_requested": True}}
                )
                if flagged.modified_count:
                    return "scheduled"
                continue
            fields = requeue_fields(doc["recipients"], utcnow())
            if fields is None:
                return "nothing"
            reset = self.c.outgoing.update_one(
                {"_id": email_id, "status": doc["status"], "next_attempt_at": doc.get("next_attempt_at"), "lease": doc.get("lease")},
                {"$set": fields},
            )
            if reset.modified_count:
                return "queued"
        return "busy"

    def delete(self, email_id: ObjectId) -> str:
        """Delete a message and release its bytes: "deleted", "scheduled" or "not found"."""
        for _ in range(_MAX_FLAG_RACES):
            doc = self.c.outgoing.find_one({"_id": email_id}, {"status": 1, "lease": 1, "blob": 1, "size": 1})
            if doc is None:
                return "not found"
            if doc["status"] == SENDING:
                flagged = self.c.outgoing.update_one(
                    {"_id": email_id, "status": SENDING, "lease": doc.get("lease")}, {"$set": {"delete_requested": True}}
                )
                if flagged.modified_count:
                    return "scheduled"
                continue
            if self.c.outgoing.delete_one({"_id": email_id, "status": {"$ne": SENDING}}).deleted_count:
                self.blobs.release([(doc["blob"], doc["size"])])
                return "deleted"
        return "busy"

    def delete_claimed(self, doc: dict) -> bool:
        """Delete a message its claimer found flagged for deletion."""
        if self.c.outgoing.delete_one({"_id": doc["_id"], "lease": doc["lease"]}).deleted_count:
            self.blobs.release([(doc["blob"], doc["size"])])
            return True
        return False

    def stats(self) -> dict[str, Any]:
        counts = {status: self.c.outgoing.count_documents({"status": status}) for status in MESSAGE_STATUSES}
        now = utcnow()
        counts["due"] = sum(
            self.c.outgoing.count_documents({"status": s, "next_attempt_at": {"$lte": now}}) for s in (QUEUED, DEFERRED)
        )
        counts["total"] = self.c.outgoing.estimated_document_count()
        counts["successful_records"] = self.c.successful.estimated_document_count()
        counts["bounced_records"] = self.c.bounced.estimated_document_count()
        return counts


def enqueue(collections: Collections, messages: list[tuple[str, list[str], bytes]], now: Optional[datetime] = None) -> list[ObjectId]:
    """Queue ``(sender, recipients, raw)`` messages directly (tools, benchmarks, tests);
    the same document shape the inbound service writes."""
    now = now or utcnow()
    docs: list[dict[str, Any]] = []
    chunks: list[dict] = []
    for sender, recipients, raw in messages:
        blob_id = ObjectId()
        chunks.extend(blob_documents(blob_id, raw))
        email_id = ObjectId()
        docs.append(
            {
                "_id": email_id,
                "queue_id": str(email_id),
                "from": sender,
                "to": recipients,
                "recipients": [{"address": r, "status": QUEUED, "attempts": 0} for r in recipients],
                "subject": "",
                "message_id": "",
                "size": len(raw),
                "blob": blob_id,
                "status": QUEUED,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
                "source": "api",
            }
        )
    if chunks:
        collections.raw.insert_many(chunks, ordered=False)
        collections.outgoing.insert_many(docs, ordered=False)
    return [d["_id"] for d in docs]


def requeue_fields(recipients: list[dict], now: datetime) -> Optional[dict]:
    """The ``$set`` that queues again every recipient not delivered, with a fresh budget of
    attempts and age; None when there is none. ``history`` keeps the earlier attempts."""
    again = [dict(r, status=QUEUED, attempts=0) if r.get("status") != SENT else r for r in recipients]
    if all(r.get("status") == SENT for r in recipients):
        return None
    return {"recipients": again, "status": QUEUED, "next_attempt_at": now, "retry_from": now, "attempts": 0, "updated_at": now}


def _stamped(completion: Completion) -> dict:
    """The completion's update, recording which attempt (lease token) applied it."""
    update = {k: dict(v) for k, v in completion.update.items()}
    update.setdefault("$set", {})["completed_lease"] = completion.lease
    return update


def _insert_ignoring_duplicates(collection, documents: list[dict]) -> None:
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        if any(e.get("code") != 11000 for e in exc.details.get("writeErrors", [])) or exc.details.get("writeConcernErrors"):
            raise
