"""Group commit: one writer greenlet stores the messages of many concurrent sessions.

Each SMTP/LMTP session hands a :class:`WriteRequest` to :meth:`DeliveryWriter.submit`
and waits. The writer takes everything queued at that moment as one batch and
stores it with one round trip per collection (UID reservation per folder,
``raw.files``, ``raw.chunks``, ``messages``, ``emails``, ``incoming_emails``, usage),
all journaled, then wakes the sessions. While a batch is being written the next one
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
    blobs: list[tuple[ObjectId, bytes, str]] = field(default_factory=list)  # (id, bytes, filename)
    messages: list[dict] = field(default_factory=list)  # need "folder"; get "uid"/"modseq"
    outgoing: Optional[dict] = None
    incoming: Optional[dict] = None
    usage: list[tuple[str, int]] = field(default_factory=list)
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
        try:
            ready = self._assign_uids(batch)
        except PyMongoError as exc:
            log.error("UID reservation failed for a batch of %d: %s", len(batch), exc)
            for request in batch:
                request.result.set_exception(WriteFailed(str(exc)))
            return
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self._insert(ready)
                break
            except (AutoReconnect, ConnectionFailure) as exc:
                if attempt == WRITE_ATTEMPTS:
                    self._fail(ready, exc)
                    return
                log.warning("batch write attempt %d failed (%s); retrying", attempt, exc)
                gevent.sleep(0.2 * attempt)
            except PyMongoError as exc:
                self._fail(ready, exc)
                return
        for request in ready:
            request.result.set(None)
        self.batches += 1
        self.messages_written += len(ready)
        log.debug("stored batch of %d in %.1f ms", len(ready), (time.monotonic() - started) * 1000)

    def _fail(self, batch: list[WriteRequest], exc: Exception) -> None:
        log.error("could not store a batch of %d messages: %s", len(batch), exc)
        for request in batch:
            request.result.set_exception(WriteFailed(str(exc)))

    def _assign_uids(self, batch: list[WriteRequest]) -> list[WriteRequest]:
        """Reserve UIDs per folder for the whole batch; drop requests whose folder vanished."""
        per_folder: dict[ObjectId, list[dict]] = defaultdict(list)
        owner: dict[ObjectId, list[WriteRequest]] = defaultdict(list)
        for request in batch:
            for message in request.messages:
                per_folder[message["folder"]].append(message)
                owner[message["folder"]].append(request)
        failed: set[int] = set()
        for folder_id, messages in per_folder.items():
            try:
                reservation = self.folders.reserve(folder_id, len(messages))
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

    def _insert(self, batch: list[WriteRequest]) -> None:
        files, chunks, messages, outgoing, incoming, usage = [], [], [], [], [], []
        for request in batch:
            for blob_id, raw, filename in request.blobs:
                files_doc, chunk_docs = blob_documents(blob_id, raw, filename, request.received_at)
                files.append(files_doc)
                chunks.extend(chunk_docs)
            messages.extend(request.messages)
            if request.outgoing is not None:
                outgoing.append(request.outgoing)
            if request.incoming is not None:
                incoming.append(request.incoming)
            usage.extend(request.usage)
        # Bytes first, then what refers to them: a crash in between leaves only
        # unreferenced bytes, never a message without its content.
        _insert_idempotent(self.c.raw_chunks, chunks)
        _insert_idempotent(self.c.raw_files, files)
        _insert_idempotent(self.c.messages, messages)
        _insert_idempotent(self.c.outgoing, outgoing)
        _insert_idempotent(self.c.incoming, incoming)
        if usage:
            totals: dict[str, int] = defaultdict(int)
            for address, size in usage:
                totals[address] += size
            self.mailboxes.add_usage(totals.items())


def _insert_idempotent(collection, documents: list[dict]) -> None:
    """``insert_many`` that treats "already there" (same ``_id``) as success."""
    if not documents:
        return
    try:
        collection.insert_many(documents, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        real = [e for e in errors if e.get("code") != _DUPLICATE_KEY or "_id" not in str(e.get("keyValue", e.get("errmsg", "")))]
        if real or exc.details.get("writeConcernErrors"):
            raise
