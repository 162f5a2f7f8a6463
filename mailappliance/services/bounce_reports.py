"""Writing owed bounce reports (RFC 3464) into local senders' INBOXes.

A report is owed once the outcome that bounced recipients is recorded: its document in
``pending_reports`` already holds what the report says and the ids it is stored under
(chosen in ``outcomes.py``), so writing it twice - after a crash, or by two processes -
stores one message. Reports are written right after the outcome is recorded and by a
periodic sweep (``DSN_SWEEP_INTERVAL``) that picks up any left behind.
"""
from __future__ import annotations

import logging
from typing import Any, Optional

from mailappliance.services.dsn import FailedRecipient, build_dsn
from mailappliance.services.mime import summarize
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.queue import OutboundQueue, QueueStoreError, store_errors, utcnow
from mailappliance.storage.writer import DeliveryWriter, WriteFailed, WriteRequest

log = logging.getLogger("mailappliance.queue")

DSN_SWEEP_LIMIT = 1000
REPORT_CLAIM_SECONDS = 300.0


class ReportWriter:
    def __init__(
        self, hostname: str, queue: OutboundQueue, blobs: BlobStore, mailboxes: MailboxStore, writer: Optional[DeliveryWriter]
    ) -> None:
        self.hostname = hostname
        self.queue = queue
        self.blobs = blobs
        self.mailboxes = mailboxes
        self.writer = writer
        self.written = 0

    def wants_report(self, sender: str) -> bool:
        """A report goes to a local mailbox only; never to <> (RFC 5321 §4.5.5), never to a
        remote sender (no backscatter)."""
        if not sender or self.writer is None:
            return False
        try:
            with store_errors():
                return self.mailboxes.lookup(sender.lower()) is not None
        except QueueStoreError:
            return True  # decide when writing it

    def sweep(self) -> int:
        """Write the reports still owed; returns how many were looked at."""
        try:
            ids = self.queue.pending_reports(DSN_SWEEP_LIMIT)
        except QueueStoreError as exc:
            log.warning("could not look for bounce reports still owed: %s", exc)
            return 0
        for report_id in ids:
            self.write(report_id)
        return len(ids)

    def write(self, report_id: Any) -> bool:
        """Put one owed report into the sender's INBOX; True when it is done (or none is owed)."""
        try:
            report = self.queue.claim_report(report_id, REPORT_CLAIM_SECONDS)
            if report is None:
                return False  # written already, or another runner is writing it
            sender = (report.get("sender") or "").lower()
            with store_errors():
                mailbox = self.mailboxes.lookup(sender) if sender else None
            if mailbox is None or self.writer is None:
                self.queue.report_written(report, stored=False)
                return True
            if not self.queue.report_stored(report):
                with store_errors():
                    request = self._request(report, mailbox)
                self.writer.submit(request)
            self.queue.report_written(report, stored=True)
            self.written += 1
            log.info("bounce report for %d recipient(s) put into %s's INBOX", len(report["failed"]), sender)
            return True
        except (QueueStoreError, WriteFailed) as exc:
            log.error("bounce report %s not written yet (%s); retried by the next sweep", report_id, exc)
        except Exception:
            log.exception("bounce report %s failed", report_id)
        return False

    def _request(self, report: dict, mailbox: dict) -> WriteRequest:
        doc = self.queue.get(report["email_id"]) or {}
        original: Optional[bytes] = None
        if doc.get("blob") is not None:
            try:
                original = self.blobs.read(doc["blob"], doc["size"])
            except (KeyError, ValueError):
                original = None
        failed = [
            FailedRecipient(f["address"], f["status"], f["diagnostic"], f.get("remote_mta"), f.get("last_attempt"), f.get("from_remote", True))
            for f in report["failed"]
        ]
        now = utcnow()
        raw = b"Return-Path: <>\r\n" + build_dsn(
            reporting_host=self.hostname,
            sender=report.get("sender") or "",
            failed=failed,
            original=original,
            arrival=doc.get("created_at"),
            now=now,
            queue_id=doc.get("queue_id") or "",
        )
        summary = summarize(raw)
        return WriteRequest(
            received_at=now,
            blobs=[(report["blob_id"], raw, 1)],
            messages=[
                {
                    "_id": report["message_id"],
                    "mailbox": mailbox["_id"],
                    "folder": mailbox["inbox"],
                    "flags": [],
                    "internal_date": now,
                    "size": len(raw),
                    "blob": report["blob_id"],
                    "queue_id": doc.get("queue_id"),
                    **summary.message_fields(),
                }
            ],
        )
