"""Group commit: one writer greenlet stores the messages of many concurrent sessions.

Each SMTP/LMTP session hands a :class:`WriteRequest` to :meth:`DeliveryWriter.submit`
and waits. The writer takes everything queued at that moment as one batch and
stores it with one round trip per collection (UID reservation and counters per
folder, ``raw_messages``, ``messages``, ``emails``, ``incoming_emails``), then wakes
the sessions. While a batch is being written the next one
gathers, so the cost per message falls as load rises.

One writer per process also keeps UIDs of a folder visible in the order they were
allocated. Every document gets its ``_id`` before the first attempt, so a batch
retried after a lost connection cannot store anything twice.
"""
from __future__ import annotations

import logging
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional

import gevent
from gevent.event import AsyncResult
from gevent.queue import Queue
from bson import ObjectId
from pymongo.errors import AutoReconnect, BulkWriteError, ConnectionFailure, PyMongoError
from pymongo.write_concern import WriteConcern

from mailappliance.storage.blobs import blob_documents
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.mongo import Collections

log = logging.getLogger("mailappliance.writer")

MAX_BATCH_MESSAGES = 128
MAX_BATCH_BYTES = 32 * 1024 * 1024
WRITE_ATTEMPTS = 3
_DUPLICATE_KEY = 11000


class WriteFailed(Exception):
    """The batch holding this request could not be stored."""


@dataclass
class WriteRequest:
    """Everything one received message writes."""

    received_at: datetime
    blobs: list[tuple[ObjectId, bytes, int]] = field(default_factory=list)  # (id, bytes, references)
    messages: list[dict] = field(default_factory=list)  # need "folder"; get "uid"/"modseq"
    outgoing: Optional[dict] = None
    incoming: Optional[dict] = None
    result: AsyncResult = field(default_factory=AsyncResult)

    @property
    def size(self) -> int:
        return sum(len(raw) for _, raw, _ in self.blobs)


_STOP = object()


class DeliveryWriter:
    def __init__(self, collections: Collections, folders: FolderStore, mailboxes: MailboxStore) -> None:
        self.c = collections
        self.folders = folders
        self.mailboxes = mailboxes
        self._queue: Queue = Queue()
        self._greenlet: Optional[gevent.Greenlet] = None
        self.batches = 0
        self.messages_written = 0

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

    def submit(self, request: WriteRequest, timeout: Optional[float] = 120.0) -> None:
        """Queue ``request`` and block this greenlet until it is durably stored."""
        if self._greenlet is None:
            raise WriteFailed("writer is not running")
        self._queue.put(request)
        request.result.get(timeout=timeout)

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
            self._write_batch(batch)

    def _write_batch(self, batch: list[WriteRequest]) -> None:
        started = time.monotonic()
        progress: dict = {}  # what a failed attempt already did, so a retry does not redo it
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                ready = self._store(batch, progress)
                break
            except (AutoReconnect, ConnectionFailure) as exc:
                if attempt == WRITE_ATTEMPTS:
                    self._fail(batch, exc, progress)
                    return
                log.warning("batch write attempt %d failed (%s); retrying", attempt, exc)
                gevent.sleep(0.2 * attempt)
            except PyMongoError as exc:
                self._fail(batch, exc, progress)
                return
        for request in ready:
            request.result.set(None)
        self.batches += 1
        self.messages_written += len(ready)
        log.debug("stored batch of %d in %.1f ms", len(ready), (time.monotonic() - started) * 1000)

    def _store(self, batch: list[WriteRequest], progress: dict) -> list[WriteRequest]:
        """Store a batch; the order that matters is kept.

        The raw bytes are written while UIDs are reserved; then, once the bytes are
        in, messages, queue entries and incoming records. A crash in between
        leaves only unreferenced bytes, never a message without its content; batches
        never overlap, so a folder's messages become visible in UID order.
        """
        chunks = [doc for request in batch for blob_id, raw, refs in request.blobs for doc in blob_documents(blob_id, raw, refs)]
        unsynced = _without_journal_wait(self.c.raw.write_concern)
        raw_write = gevent.spawn(_insert_idempotent, self.c.raw, chunks, unsynced)
        try:
            if "ready" not in progress:  # UIDs are reserved once per batch
                progress["ready"] = self._assign_uids(batch, progress)
            ready = progress["ready"]
        finally:
            raw_write.join()
        raw_write.get()  # re-raise its error, if any

        messages = [m for request in ready for m in request.messages]
        outgoing = [r.outgoing for r in ready if r.outgoing is not None]
        incoming = [r.incoming for r in ready if r.incoming is not None]
        # Sequential, unsynced, except the last write: the journal is sequential, so
        # once the last write is journaled every earlier one is too (one sync per
        # batch; concurrent journaled writes cost the embedded server far more).
        writes = [(c, d) for c, d in ((self.c.messages, messages), (self.c.outgoing, outgoing), (self.c.incoming, incoming)) if d]
        for collection, documents in writes[:-1]:
            _insert_idempotent(collection, documents, unsynced)
        if writes:
            _insert_idempotent(*writes[-1])  # journaled: makes the whole batch durable
        return ready

    def _fail(self, batch: list[WriteRequest], exc: Exception, progress: Optional[dict] = None) -> None:
        log.error("could not store a batch of %d messages: %s", len(batch), exc)
        for folder_id, count, size, unseen in (progress or {}).get("counted", []):
            try:
                self.folders.uncount(folder_id, count, size, unseen)
            except PyMongoError as undo_exc:
                log.error("folder %s counters are off by %d messages: %s", folder_id, count, undo_exc)
        for request in batch:
            if not request.result.ready():
                request.result.set_exception(WriteFailed(str(exc)))

    def _assign_uids(self, batch: list[WriteRequest], progress: dict) -> list[WriteRequest]:
        """Reserve UIDs per folder for the whole batch; drop requests whose folder vanished."""
        per_folder: dict[ObjectId, list[dict]] = defaultdict(list)
        owner: dict[ObjectId, list[WriteRequest]] = defaultdict(list)
        for request in batch:
            for message in request.messages:
                per_folder[message["folder"]].append(message)
                owner[message["folder"]].append(request)
        failed: set[int] = set()
        for folder_id, messages in per_folder.items():
            size = sum(m["size"] for m in messages)
            unseen = sum(1 for m in messages if "\\Seen" not in m.get("flags", ()))
            try:
                reservation = self.folders.reserve(folder_id, len(messages), size, unseen)
                progress.setdefault("counted", []).append((folder_id, len(messages), size, unseen))
            except KeyError:
                for request in owner[folder_id]:
                    if id(request) not in failed:
                        failed.add(id(request))
                        request.result.set_exception(WriteFailed("the mailbox was deleted"))
                continue
            for offset, message in enumerate(messages):
                message["uid"] = reservation.first_uid + offset
                message["modseq"] = reservation.first_modseq + offset
        return [r for r in batch if id(r) not in failed]


def _without_journal_wait(concern: WriteConcern) -> WriteConcern:
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
