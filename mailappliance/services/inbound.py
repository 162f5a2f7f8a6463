"""Inbound mail: the SMTP/LMTP sessions' backend (recipient policy and storage).

Policy (never an open relay): a recipient in a local domain must be an existing
mailbox (else 550 5.1.1); any other domain is relayed only for an authenticated
session or a client in ``RELAY_NETWORKS`` (else 554 5.7.1). Local mail goes to the
mailbox's INBOX with ``Return-Path`` and ``Received`` prepended (RFC 5321 §4.4);
relayed mail gets ``Received`` and is queued in ``emails`` with status ``queued``.
Nothing is acknowledged before the database has journaled it.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional, Union

from bson import ObjectId

from mailappliance.protocol.addresses import Address
from mailappliance.protocol.received import return_path_header
from mailappliance.protocol.replies import Reply, S
from mailappliance.protocol.smtp import BackendUnavailable, Recipient, Transaction
from mailappliance.services.auth import Authenticator
from mailappliance.services.domains import LocalDomains
from mailappliance.services.mime import MessageSummary, summarize
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.writer import DeliveryWriter, MessageUnstorable, WriteFailed, WriteRequest

log = logging.getLogger("mailappliance.delivery")

# ``Transaction.role`` of a message submitted with ``POST /api/send``, and the ``source``
# its incoming_emails and emails documents record.
ROLE_API = "api"
SOURCE_API = "api"

try:
    from pymongo.errors import PyMongoError
except ImportError:  # pragma: no cover
    PyMongoError = Exception  # type: ignore


@dataclass
class LocalRecipient(Recipient):
    """A recipient with a mailbox here, as read at RCPT time."""

    inbox: Optional[ObjectId] = None
    quota: int = 0
    used: int = 0

    def would_overflow(self, size: int) -> bool:
        return bool(self.quota) and self.used + size > self.quota


@dataclass
class Delivery:
    """The replies for one transaction and, when anything was stored, the write request
    (its ``messages``, ``outgoing`` and ``incoming`` documents, and ``dropped`` mailboxes)."""

    replies: list[Reply]
    request: Optional[WriteRequest] = None


def _source(transaction: Transaction) -> str:
    """``incoming_emails.source``: how the message came in."""
    if transaction.role == ROLE_API:
        return SOURCE_API
    return "lmtp" if transaction.protocol.startswith("LMTP") else "smtp"


class InboundService:
    def __init__(
        self,
        mailboxes: MailboxStore,
        domains: LocalDomains,
        authenticator: Authenticator,
        writer: DeliveryWriter,
        default_quota: int = 0,
    ) -> None:
        self.mailboxes = mailboxes
        self.domains = domains
        self.authenticator = authenticator
        self.writer = writer
        self.default_quota = default_quota

    # ------------------------------------------------------------------ hooks
    def authenticate(self, username: str, password: str) -> Optional[str]:
        try:
            return self.authenticator.authenticate(username, password)
        except PyMongoError as exc:
            log.error("authentication lookup failed: %s", exc)
            raise BackendUnavailable() from exc

    def check_recipient(self, address: Address, relay_allowed: bool, size_hint: int) -> Union[Recipient, Reply]:
        try:
            domain = address.domain or self.domains.primary() or ""
            if domain and not address.is_address_literal and self.domains.is_local(domain):
                mailbox_id = f"{address.local}@{domain}".lower()
                mailbox = self.mailboxes.lookup(mailbox_id)
                if mailbox is None:
                    return S.NO_SUCH_USER
                recipient = LocalRecipient(
                    address=address.address if address.domain else mailbox_id,
                    mailbox=mailbox_id,
                    inbox=mailbox["inbox"],
                    quota=mailbox.get("quota") or self.default_quota,
                    used=mailbox.get("used_bytes", 0),
                )
                if recipient.would_overflow(size_hint):
                    return S.MAILBOX_FULL
                return recipient
        except PyMongoError as exc:
            log.error("recipient lookup failed: %s", exc)
            raise BackendUnavailable() from exc
        if not address.domain:
            return S.NO_SUCH_USER
        if relay_allowed:
            return Recipient(address=address.address, mailbox=None)
        return S.RELAY_DENIED

    def deliver(self, transaction: Transaction, per_recipient: bool) -> list[Reply]:
        return self.store(transaction, per_recipient).replies

    def store(self, transaction: Transaction, per_recipient: bool) -> Delivery:
        """:meth:`deliver`, also returning what was written (``POST /api/send`` reports it)."""
        started = time.monotonic()
        envelope = transaction.envelope
        recipients = envelope.recipients
        local_raw = return_path_header(envelope.mail_from or "") + transaction.received_header + transaction.message
        relay_raw = transaction.received_header + transaction.message

        verdicts: list[Optional[Reply]] = []
        for rcpt in recipients:
            if isinstance(rcpt, LocalRecipient) and rcpt.would_overflow(len(local_raw)):
                verdicts.append(S.MAILBOX_FULL)
            else:
                verdicts.append(None)
        if not per_recipient and any(verdicts):
            refused = next(v for v in verdicts if v is not None)
            self._log(transaction, "refused", refused, started)
            return Delivery([refused])
        accepted = [r for r, v in zip(recipients, verdicts) if v is None]
        if not accepted:
            self._log(transaction, "refused", verdicts[0], started)
            return Delivery([v for v in verdicts if v is not None])

        summary = summarize(transaction.message)
        request = self._build_request(transaction, accepted, local_raw, relay_raw, summary)
        request.all_or_nothing = not per_recipient
        try:
            self.writer.submit(request)
        except MessageUnstorable as exc:
            log.warning("%s: refused: %s", transaction.queue_id, exc)
            self._log(transaction, "refused", S.UNSTORABLE, started)
            return Delivery([S.UNSTORABLE] * (len(recipients) if per_recipient else 1))
        except (WriteFailed, PyMongoError) as exc:
            log.error("%s: storing failed: %s", transaction.queue_id, exc)
            self._log(transaction, "deferred", S.STORAGE_FAILED, started)
            return Delivery([S.STORAGE_FAILED] * (len(recipients) if per_recipient else 1))

        stored_local = len(request.messages)
        self._log(transaction, "stored", None, started, local=stored_local, relayed=sum(1 for r in accepted if not r.is_local))
        if not per_recipient:
            return Delivery([S.queued(transaction.queue_id)], request)
        replies = []
        for rcpt, verdict in zip(recipients, verdicts):
            if verdict is None and rcpt.mailbox in request.dropped:
                verdict = S.NO_SUCH_USER  # deleted between RCPT and the end of DATA
            replies.append(verdict if verdict is not None else S.delivered(rcpt.address, transaction.queue_id))
        return Delivery(replies, request)

    # ------------------------------------------------------------------ documents
    def _build_request(
        self,
        transaction: Transaction,
        accepted: list[Recipient],
        local_raw: bytes,
        relay_raw: bytes,
        summary: MessageSummary,
    ) -> WriteRequest:
        envelope = transaction.envelope
        when = transaction.received_at
        queue_id = transaction.queue_id
        local = [r for r in accepted if isinstance(r, LocalRecipient)]
        relayed = [r for r in accepted if not r.is_local]
        request = WriteRequest(received_at=when)

        seen_mailboxes: set[str] = set()
        if local:
            blob_id = ObjectId()
            for rcpt in local:
                if rcpt.mailbox in seen_mailboxes:
                    continue  # the same mailbox twice gets one copy
                seen_mailboxes.add(rcpt.mailbox)  # type: ignore[arg-type]
                request.messages.append(
                    {
                        "_id": ObjectId(),
                        "mailbox": rcpt.mailbox,
                        "folder": rcpt.inbox,
                        "flags": [],
                        "internal_date": when,
                        "size": len(local_raw),
                        "blob": blob_id,
                        "queue_id": queue_id,
                        **summary.message_fields(),
                    }
                )
            request.blobs.append((blob_id, local_raw, len(request.messages)))  # one reference per copy
        if relayed:
            blob_id = ObjectId()
            request.blobs.append((blob_id, relay_raw, 1))
            request.outgoing = {
                "_id": ObjectId(queue_id),  # one id in the reply, the log, incoming_emails and the queue
                "queue_id": queue_id,
                "from": envelope.mail_from,
                "to": [r.address for r in relayed],
                "recipients": [{"address": r.address, "status": "queued", "attempts": 0} for r in relayed],
                "subject": summary.subject,
                "message_id": summary.message_id,
                "size": len(relay_raw),
                "blob": blob_id,
                "status": "queued",
                "attempts": 0,
                "next_attempt_at": when,
                "created_at": when,
                "updated_at": when,
                "source": SOURCE_API if transaction.role == ROLE_API else transaction.protocol.lower(),
                "authenticated_as": transaction.authenticated_as,
                "client_ip": transaction.peer.ip,
                "incoming_id": ObjectId(queue_id),
            }
        status = "stored" if local and not relayed else "queued" if relayed and not local else "stored+queued"
        request.incoming = {
            "_id": ObjectId(queue_id),
            "queue_id": queue_id,
            "sender": envelope.mail_from,
            "recipients": [r.address for r in accepted],
            "local_recipients": [r.mailbox for r in local],
            "relayed_recipients": [r.address for r in relayed],
            "source": _source(transaction),
            "role": transaction.role,
            "protocol": transaction.protocol,
            "helo": envelope.helo,
            "remote_address": transaction.peer.ip,
            "remote_port": transaction.peer.port,
            "local_port": transaction.peer.local_port,
            "tls": transaction.tls,
            "authenticated_as": transaction.authenticated_as,
            "message_id": summary.message_id,
            "subject": summary.subject,
            "from_header": summary.from_,
            "size": len(transaction.message),
            "attachments": summary.attachments,
            "message_ids": [m["_id"] for m in request.messages],
            "outgoing_id": request.outgoing["_id"] if request.outgoing else None,
            "received_at": when,
            "status": status,
        }
        return request

    def _log(
        self,
        transaction: Transaction,
        result: str,
        reply: Optional[Reply],
        started: float,
        local: int = 0,
        relayed: int = 0,
    ) -> None:
        envelope = transaction.envelope
        to = ",".join(f"<{r.address}>" for r in envelope.recipients)
        detail = f"{local} local, {relayed} relayed" if reply is None else str(reply)
        log.info(
            "%s: client=[%s]:%d port=%d proto=%s from=<%s> to=%s size=%d result=%s (%s) %.1f ms",
            transaction.queue_id,
            transaction.peer.ip,
            transaction.peer.port,
            transaction.peer.local_port,
            transaction.protocol,
            envelope.mail_from,
            to,
            len(transaction.message),
            result,
            detail,
            (time.monotonic() - started) * 1000,
        )
