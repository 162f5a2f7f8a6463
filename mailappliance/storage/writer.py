"""Group commit: one writer greenlet stores the messages of many concurrent sessions.

Each SMTP/LMTP session hands a :class:`WriteRequest` to :meth:`DeliveryWriter.submit`
and waits. The writer takes everything queued at that moment as one batch and
stores it with one round trip per collection: the raw bytes (``raw_messages``) while
UIDs are reserved and counted per folder, then ``messages``, ``emails`` and
``incoming_emails``. Only the last write waits for the journal; the journal is
sequential, so that one sync makes the whole batch durable, and only then are the
sessions woken to answer 250. While a batch is written the next one gathers, so
the cost per message falls as load rises (shared/embedded-db.md).

Guarantees:

* A folder's messages become visible in UID order: batches never overlap.
* A request that can never be stored (a document BSON cannot hold, or over 16 MB)
  is found when its batch fails, refused with a permanent error, and the rest of
  the batch is stored without it: one poison message cannot fail anyone else's
  mail, and normal mail pays nothing for the check.
* A batch that fails is undone (its documents deleted, its folder counts taken
  back) before its sessions get a 4xx, so a retried message is not stored twice.
  Every document has its ``_id`` before the first attempt and UID reservations
  carry the batch's token, so a retry after a lost reply repeats nothing.
* Whatever goes wrong with one batch, the writer goes on with the next.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional

import bson
import gevent
from bson import ObjectId
from bson.errors import InvalidDocument
from gevent.event import AsyncResult
from gevent.queue import Queue
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from mailappliance.storage.blobs import blob_documents, chunk_ids
from mailappliance.storage.folders import FolderStore, Reservation
from mailappliance.storage.mongo import Collections

log = logging.getLogger("mailappliance.writer")

MAX_BATCH_MESSAGES = 128
MAX_BATCH_BYTES = 32 * 1024 * 1024
MAX_DOCUMENT_BYTES = 16 * 1024 * 1024 - 64 * 1024  # MongoDB's limit, less room for the command
WRITE_ATTEMPTS = 3
SUBMIT_TIMEOUT = 120.0
_DUPLICATE_KEY = 11000


class WriteFailed(Exception):
    """The message was not stored; the client may try again (4xx)."""


class MessageUnstorable(WriteFailed):
    """The message can never be stored as it is (5xx)."""


@dataclass
class WriteRequest:
    """Everything one received message writes."""

    received_at: datetime
    blobs: list[tuple[ObjectId, bytes, int]] = field(default_factory=list)  # (id, bytes, references)
    messages: list[dict] = field(default_factory=list)  # need "folder", "mailbox", "size"; get "uid"/"modseq"
    outgoing: Optional[dict] = None
    incoming: Optional[dict] = None
    all_or_nothing: bool = True  # SMTP: one reply for all; LMTP: one per recipient
    dropped: set[str] = field(default_factory=set)  # mailboxes deleted before their copy was stored
    result: AsyncResult = field(default_factory=AsyncResult)

    @property
    def size(self) -> int:
        return sum(len(raw) for _, raw, _ in self.blobs)

    def check_storable(self) -> None:
        """Refuse documents BSON cannot hold (e.g. NUL in a key) or over MongoDB's 16 MB."""
        documents = list(self.messages) + [d for d in (self.outgoing, self.incoming) if d is not None]
        for document in documents:
            try:
                encoded = len(bson.encode(document))
            except (InvalidDocument, ValueError, TypeError, OverflowError) as exc:
                raise MessageUnstorable(f"message summary cannot be stored: {str(exc)[:200]}") from None
            if encoded > MAX_DOCUMENT_BYTES:
                raise MessageUnstorable(f"message summary is {encoded} bytes, over the 16 MB document limit")


@dataclass
class _Progress:
    """What attempts on one batch have done, so a retry repeats none of it."""

    token: ObjectId = field(default_factory=ObjectId)
    reserved: dict[ObjectId, tuple[Reservation, list[dict]]] = field(default_factory=dict)
    missing: set[ObjectId] = field(default_factory=set)
    ready: Optional[list[WriteRequest]] = None


_STOP = object()


class DeliveryWriter:
    def __init__(self, collections: Collections, folders: FolderStore) -> None:
        self.c = collections
        self.folders = folders
        self._queue: Queue = Queue()
        self._greenlet: Optional[gevent.Greenlet] = None
        self.batches = 0
        self.messages_written = 0
        self.failed_batches = 0
        self.listeners: list[Callable[[set[ObjectId]], None]] = []

    @property
    def alive(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._run)

    def stop(self, timeout: float = 30.0) -> None:
        """Write what is queued, then stop."""
        if self._greenlet is None:
            return
        self._queue.put(_STOP)
        self._greenlet.join(timeout)
        if not self._greenlet.dead:
            self._greenlet.kill()
        self._greenlet = None

    def submit(self, request: WriteRequest, timeout: float = SUBMIT_TIMEOUT) -> None:
        """Queue ``request`` and block this greenlet until it is durably stored.

        Raises :class:`MessageUnstorable` (never storable) or :class:`WriteFailed`.
        """
        if not self.alive:
            raise WriteFailed("writer is not running")
        self._queue.put(request)
        try:
            request.result.get(timeout=timeout)
        except gevent.Timeout:
            raise WriteFailed(f"not stored within {timeout:.0f} s") from None

    # ------------------------------------------------------------------ loop
    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is _STOP:
                break
            batch = [item]
            size = item.size
            while len(batch) < MAX_BATCH_MESSAGES and size < MAX_BATCH_BYTES and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is _STOP:
                    stopping = True
                    break
                batch.append(nxt)
                size += nxt.size
            try:
                self._write_batch(batch)
            except Exception as exc:  # never let one batch stop the writer
                log.exception("unexpected error storing a batch of %d", len(batch))
                self._fail(batch, exc, None)

    def _write_batch(self, batch: list[WriteRequest], isolate: bool = True) -> None:
        started = time.monotonic()
        progress = _Progress()
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                ready = self._store(batch, progress)
                break
            except (AutoReconnect, ConnectionFailure) as exc:
                if attempt == WRITE_ATTEMPTS:
                    self._fail(batch, exc, progress)
                    return
                log.warning("batch write attempt %d failed (%s); retrying", attempt, _short(exc))
                gevent.sleep(0.2 * attempt)
            except (PyMongoError, InvalidDocument) as exc:
                if isolate and self._isolate_unstorable(batch, progress):
                    return
                self._fail(batch, exc, progress)
                return
            except Exception as exc:  # e.g. UID contention: still undo what was done
                log.exception("unexpected error storing a batch of %d", len(batch))
                self._fail(batch, exc, progress)
                return
        # End the reservations before answering, so a client that hears "stored"
        # finds the message at once (an IMAP APPEND then SELECT, say).
        self._release(progress)
        for request in ready:
            request.result.set(None)
        self.batches += 1
        self.messages_written += len(ready)
        log.debug("stored batch of %d in %.1f ms", len(ready), (time.monotonic() - started) * 1000)

    def _store(self, batch: list[WriteRequest], progress: _Progress) -> list[WriteRequest]:
        """Store a batch; the order that matters is kept.

        The raw bytes are written while UIDs are reserved; then, once the bytes are
        in, messages, queue entries and incoming records. A crash in between leaves
        only unreferenced bytes, never a message without its content.
        """
        chunks = [doc for request in batch for blob_id, raw, refs in request.blobs for doc in blob_documents(blob_id, raw, refs)]
        unsynced = _unsynced(self.c.raw.write_concern)
        raw_write = gevent.spawn(_insert_idempotent, self.c.raw, chunks, unsynced)
        try:
            self._reserve(batch, progress)
        finally:
            raw_write.join()
        raw_write.get()  # re-raise its error, if any
        if progress.ready is None:
            progress.ready = self._assign(batch, progress)
        ready = progress.ready

        messages = [m for request in ready for m in request.messages]
        outgoing = [r.outgoing for r in ready if r.outgoing is not None]
        incoming = [r.incoming for r in ready if r.incoming is not None]
        writes = [(c, d) for c, d in ((self.c.messages, messages), (self.c.outgoing, outgoing), (self.c.incoming, incoming)) if d]
        for collection, documents in writes[:-1]:
            _insert_idempotent(collection, documents, unsynced)
        if writes:
            _insert_idempotent(*writes[-1])  # journaled: makes the whole batch durable
        return ready

    def _reserve(self, batch: list[WriteRequest], progress: _Progress) -> None:
        """Reserve and count UIDs per folder, each folder once per batch whatever the retries."""
        per_folder: dict[ObjectId, list[dict]] = defaultdict(list)
        for request in batch:
            for message in request.messages:
                per_folder[message["folder"]].append(message)
        for folder_id, messages in per_folder.items():
            if folder_id in progress.reserved or folder_id in progress.missing:
                continue
            size, unseen = _totals(messages)
            try:
                reservation = self.folders.reserve(folder_id, len(messages), size, unseen, token=progress.token)
            except KeyError:
                progress.missing.add(folder_id)
                continue
            progress.reserved[folder_id] = (reservation, messages)

    def _assign(self, batch: list[WriteRequest], progress: _Progress) -> list[WriteRequest]:
        """Give reserved UIDs to messages; settle requests that lost a folder."""
        for reservation, messages in progress.reserved.values():
            for offset, message in enumerate(messages):
                message["uid"] = reservation.first_uid + offset
                message["modseq"] = reservation.first_modseq + offset
        ready, failed = [], []
        for request in batch:
            lost = [m for m in request.messages if m["folder"] in progress.missing]
            if lost and request.all_or_nothing:
                failed.append(request)
                continue
            if lost:
                request.dropped = {m["mailbox"] for m in lost}
                request.messages = [m for m in request.messages if m["folder"] not in progress.missing]
                if request.incoming is not None:
                    request.incoming["message_ids"] = [m["_id"] for m in request.messages]
                    request.incoming["local_recipients"] = [m["mailbox"] for m in request.messages]
            ready.append(request)
        if failed:
            # Take back what was counted and written for them before anyone is answered.
            self._uncount([m for r in failed for m in r.messages if m["folder"] not in progress.missing])
            self._delete_blobs(failed)
            for request in failed:
                request.result.set_exception(WriteFailed("a recipient's mailbox was deleted"))
        return ready

    def _release(self, progress: _Progress) -> None:
        """End the batch's reservations, then tell listeners (IMAP IDLE) which folders changed."""
        folder_ids = set(progress.reserved)
        if not folder_ids:
            return
        try:
            self.folders.release(folder_ids, progress.token)
        except PyMongoError as exc:  # readers stop waiting for it after PENDING_TTL
            log.error("could not release UID reservations: %s", _short(exc))
        for listener in self.listeners:
            try:
                listener(folder_ids)
            except Exception:
                log.exception("folder change listener failed")

    # ------------------------------------------------------------------ failures
    def _isolate_unstorable(self, batch: list[WriteRequest], progress: _Progress) -> bool:
        """After a failed batch: refuse the requests that can never be stored, store the rest.

        Returns False when every request looks storable (the failure was something else).
        """
        pending = [r for r in batch if not r.result.ready()]
        bad: list[tuple[WriteRequest, MessageUnstorable]] = []
        for request in pending:
            try:
                request.check_storable()
            except MessageUnstorable as refused:
                bad.append((request, refused))
        if not bad:
            return False
        log.warning("refusing %d unstorable message(s) and storing the other %d", len(bad), len(pending) - len(bad))
        self._undo(pending, progress)
        self._release(progress)
        for request, reason in bad:
            request.result.set_exception(reason)
        rest = [r for r in pending if not r.result.ready()]
        if rest:
            self._write_batch(rest, isolate=False)
        return True

    def _fail(self, batch: list[WriteRequest], exc: Exception, progress: Optional[_Progress]) -> None:
        """Answer the sessions with a 4xx after undoing whatever part of the batch was written."""
        self.failed_batches += 1
        log.error("could not store a batch of %d messages: %s", len(batch), _short(exc))
        pending = [r for r in batch if not r.result.ready()]
        if progress is not None:
            try:
                self._undo(pending, progress)
            except PyMongoError as undo_exc:
                log.error("could not undo the failed batch (%s); some of it may be stored", _short(undo_exc))
        for request in pending:
            request.result.set_exception(WriteFailed(_short(exc)))
        if progress is not None:
            self._release(progress)

    def _undo(self, pending: list[WriteRequest], progress: _Progress) -> None:
        messages = [m for r in pending for m in r.messages]
        for collection, ids in (
            (self.c.messages, [m["_id"] for m in messages]),
            (self.c.outgoing, [r.outgoing["_id"] for r in pending if r.outgoing is not None]),
            (self.c.incoming, [r.incoming["_id"] for r in pending if r.incoming is not None]),
        ):
            if ids:
                collection.delete_many({"_id": {"$in": ids}})
        self._delete_blobs(pending)
        self._uncount([m for m in messages if m["folder"] in progress.reserved])

    def _delete_blobs(self, requests: list[WriteRequest]) -> None:
        ids = [c for r in requests for blob_id, raw, _ in r.blobs for c in chunk_ids(blob_id, len(raw))]
        if ids:
            try:
                self.c.raw.delete_many({"_id": {"$in": ids}})
            except PyMongoError as exc:
                log.error("could not delete the bytes of unstored messages: %s", _short(exc))

    def _uncount(self, messages: list[dict]) -> None:
        per_folder: dict[ObjectId, list[dict]] = defaultdict(list)
        for message in messages:
            per_folder[message["folder"]].append(message)
        for folder_id, dropped in per_folder.items():
            size, unseen = _totals(dropped)
            try:
                self.folders.uncount(folder_id, len(dropped), size, unseen)
            except PyMongoError as exc:
                log.error("folder %s counters are off by %d messages: %s", folder_id, len(dropped), _short(exc))


def _totals(messages: list[dict]) -> tuple[int, int]:
    """Bytes and unseen messages among ``messages``."""
    return sum(m["size"] for m in messages), sum(1 for m in messages if "\\Seen" not in m.get("flags", ()))


def _short(exc: BaseException) -> str:
    """A log-sized description: a bulk error names its first failure, never the documents."""
    if isinstance(exc, BulkWriteError):
        errors = exc.details.get("writeErrors") or [{}]
        first = errors[0]
        return f"bulk write: {len(errors)} error(s), first code {first.get('code')}: {str(first.get('errmsg', ''))[:200]}"
    return f"{exc.__class__.__name__}: {str(exc)[:300]}"


def _unsynced(concern: WriteConcern) -> WriteConcern:
    """The same write concern without waiting for the journal."""
    document = dict(concern.document)
    document["j"] = False
    return WriteConcern(**document)


def _insert_idempotent(collection, documents: list[dict], write_concern: Optional[WriteConcern] = None) -> None:
    """``insert_many`` that treats "already there" (same ``_id``) as success."""
    if not documents:
        return
    if write_concern is not None:
        collection = collection.with_options(write_concern=write_concern)
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        real = [e for e in errors if e.get("code") != _DUPLICATE_KEY or "_id" not in str(e.get("keyValue", e.get("errmsg", "")))]
        if real or exc.details.get("writeConcernErrors"):
            raise
