"""What a mail transaction carries: who is connected, the envelope, the finished message.

Plain data shared by the SMTP/LMTP sessions and the delivery services.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Optional


@dataclass
class Peer:
    """Who is connected, as the glue saw it."""

    ip: str
    port: int
    local_port: int
    reverse_name: Optional[str] = None



@dataclass
class Recipient:
    """A recipient the backend accepted: ``mailbox`` set for local delivery, else relay."""

    address: str
    mailbox: Optional[str] = None

    @property
    def is_local(self) -> bool:
        return self.mailbox is not None


@dataclass
class Envelope:
    helo: str = ""
    mail_from: Optional[str] = None  # "" is the null reverse-path
    mail_params: dict = field(default_factory=dict)
    recipients: list[Recipient] = field(default_factory=list)
    smtputf8: bool = False
    size_hint: int = 0


@dataclass
class Transaction:
    """A complete message handed to the backend: envelope, bytes, and how it came."""

    envelope: Envelope
    received_header: bytes
    message: bytes  # the body exactly as received after dot-unstuffing
    peer: Peer
    protocol: str  # RFC 3848 "with" keyword: ESMTP, ESMTPS, ESMTPSA, LMTP, ...
    queue_id: str
    authenticated_as: Optional[str]
    tls: bool
    received_at: datetime
    role: str = "mx"  # which port role received it (Role.value)
