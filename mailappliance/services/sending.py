"""``POST /api/send``: a composed message handed to the same path SMTP submission uses.

The JSON is made into a message by :mod:`mailappliance.services.compose`; then every
recipient is checked as ``RCPT TO`` is on an authenticated submission session
(:meth:`InboundService.check_recipient` with relaying allowed: the API key is the
credential), and the message goes through :meth:`InboundService.store` as one
transaction. So local recipients get it in their INBOX (quota checked, with
``Return-Path`` and ``Received``), other recipients get one ``emails`` document with
status ``queued`` that the queue runner delivers and DKIM-signs, the
``incoming_emails`` record has ``source: "api"``, and the group-commit writer stores it
all with one journal sync before the caller hears 202.

What the caller hears instead:

* 400 — the request is wrong (:class:`ComposeError`), or a recipient at a local domain
  has no mailbox (SMTP's 550 5.1.1), named in the message;
* 413 — the message is over ``MAX_EMAIL_SIZE`` or cannot be stored as it is;
* 507 — a local recipient's mailbox is over its quota (SMTP's 552 5.2.2), named;
* 503 — the database could not be read or the message could not be stored; retry.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional

from bson import ObjectId

from mailappliance.protocol.envelope import Envelope, Peer, Recipient, Transaction
from mailappliance.protocol.received import received_header, return_path_header
from mailappliance.protocol.replies import Reply, S
from mailappliance.protocol.smtp import BackendUnavailable
from mailappliance.services.compose import ComposeConfig, ComposedMessage, compose
from mailappliance.services.inbound import ROLE_API, InboundService

try:
    from pymongo.errors import PyMongoError
except ImportError:  # pragma: no cover
    PyMongoError = Exception  # type: ignore

log = logging.getLogger("mailappliance.send")

HELO_API = "api"  # the "from" of the Received header (RFC 5321 §4.4 From-domain)
PROTOCOL_HTTP = "HTTP"  # its "with": an Atom (RFC 5321 §4.4 Attdl-Protocol)
# JSON carries attachments as base64 (4/3 of their size) and text with escapes, so the
# request body may be larger than the message it makes; past this factor it is refused
# before it is parsed.
REQUEST_SIZE_FACTOR = 2
REQUEST_SIZE_SLACK = 64 * 1024


class SendRefused(Exception):
    """Nothing was sent; ``status`` is the HTTP status, ``message`` says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class SendResult:
    queue_id: str  # also the incoming_emails id and the Received header's "id"
    message_id: str
    email_id: Optional[str]  # the emails (outbound queue) document, when anything was queued
    local: list[str] = field(default_factory=list)  # stored in a mailbox here
    queued: list[str] = field(default_factory=list)  # queued for delivery elsewhere
    refused: list[dict] = field(default_factory=list)  # [{address, reason}], lost to a race with a quota or a deletion

    def as_dict(self) -> dict:
        return {
            "id": self.queue_id,
            "queue_id": self.queue_id,
            "message_id": self.message_id,
            "email_id": self.email_id,
            "local": self.local,
            "queued": self.queued,
            "refused": self.refused,
        }


class MessageSender:
    def __init__(
        self,
        inbound: InboundService,
        hostname: str,
        max_size: int,
        max_recipients: int,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.inbound = inbound
        self.hostname = hostname
        self.max_size = max_size
        self.max_recipients = max_recipients
        self.clock = clock

    @property
    def max_request_bytes(self) -> int:
        return self.max_size * REQUEST_SIZE_FACTOR + REQUEST_SIZE_SLACK

    def send(self, payload: object, client: Peer, tls: bool = False) -> SendResult:
        """Compose, check the recipients, store; raises :class:`ComposeError` or :class:`SendRefused`."""
        now = self.clock()
        config = ComposeConfig(self.hostname, self.max_size, self.max_recipients, self.inbound.domains.is_local)
        try:
            composed = compose(payload, config, now=now)
        except PyMongoError as exc:  # the local domains come from the mailboxes when ALLOWED_DOMAINS is unset
            log.error("local domain lookup failed: %s", exc)
            raise SendRefused(503, "the database is unavailable; try again later") from None
        queue_id = str(ObjectId())
        header = received_header(
            helo=HELO_API,
            peer_ip=client.ip,
            peer_name=None,
            hostname=self.hostname,
            protocol=PROTOCOL_HTTP,
            queue_id=queue_id,
            recipient=composed.recipients[0].address if len(composed.recipients) == 1 else None,
            when=now,
        )
        size = len(return_path_header(composed.mail_from)) + len(header) + len(composed.message)
        accepted = self._recipients(composed, size)
        transaction = Transaction(
            envelope=Envelope(helo=HELO_API, mail_from=composed.mail_from, recipients=accepted, size_hint=size),
            received_header=header,
            message=composed.message,
            peer=client,
            protocol=PROTOCOL_HTTP,
            queue_id=queue_id,
            authenticated_as=None,
            tls=tls,
            received_at=now,
            role=ROLE_API,
        )
        delivery = self.inbound.store(transaction, per_recipient=True)
        result = SendResult(queue_id=queue_id, message_id=composed.message_id, email_id=None)
        for rcpt, reply in zip(accepted, delivery.replies):
            if reply.code == 250:
                (result.local if rcpt.is_local else result.queued).append(rcpt.address)
            else:
                result.refused.append({"address": rcpt.address, "reason": reply.text})
        if not result.local and not result.queued:
            raise _refusal(delivery.replies[0], [r["address"] for r in result.refused])
        if delivery.request is not None and delivery.request.outgoing is not None:
            result.email_id = str(delivery.request.outgoing["_id"])
        return result

    def _recipients(self, composed: ComposedMessage, size: int) -> list[Recipient]:
        """RCPT TO for each envelope recipient; unknown or full local mailboxes refuse the lot."""
        accepted: list[Recipient] = []
        unknown: list[str] = []
        full: list[str] = []
        for address in composed.recipients:
            try:
                verdict = self.inbound.check_recipient(address, relay_allowed=True, size_hint=size)
            except BackendUnavailable:
                raise SendRefused(503, "the database is unavailable; try again later") from None
            if verdict == S.NO_SUCH_USER:
                unknown.append(address.address)
            elif verdict == S.MAILBOX_FULL:
                full.append(address.address)
            elif isinstance(verdict, Reply):  # not expected with relaying allowed
                raise SendRefused(400, f"recipient {address.address} refused: {verdict.text}")
            else:
                accepted.append(verdict)
        if unknown:
            raise SendRefused(400, f"no such mailbox here: {', '.join(unknown)}")
        if full:
            raise SendRefused(507, f"mailbox full (over its quota): {', '.join(full)}")
        return accepted


def _refusal(reply: Reply, addresses: list[str]) -> SendRefused:
    """The HTTP answer when no recipient got the message, from the SMTP reply it got."""
    who = ", ".join(addresses)
    if reply == S.NO_SUCH_USER:
        return SendRefused(400, f"no such mailbox here: {who}")
    if reply == S.MAILBOX_FULL:
        return SendRefused(507, f"mailbox full (over its quota): {who}")
    if reply == S.UNSTORABLE:
        return SendRefused(413, "the message cannot be stored as it is (too large or too complex for one document)")
    return SendRefused(503, "the message was not stored; try again later")
