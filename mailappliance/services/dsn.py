"""Bounce reports for local senders: RFC 3464 delivery status notifications.

A ``multipart/report; report-type=delivery-status`` message (RFC 6522) with a readable
explanation, the ``message/delivery-status`` part (per-message fields, then one block per
failed recipient: Final-Recipient, Action, Status, Remote-MTA, Diagnostic-Code,
Last-Attempt-Date) and the original's headers (``text/rfc822-headers``). It is written
straight into the sender's INBOX, never queued: a report is never sent to ``<>`` and can
never bounce itself (RFC 5321 §4.5.5).
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Optional

from mailappliance.services.dkim_signing import header_section

MAX_ORIGINAL_HEADERS = 64 * 1024


@dataclass
class FailedRecipient:
    address: str
    status: str  # RFC 3463 code, e.g. 5.1.1
    diagnostic: str  # the remote reply, or what went wrong here
    remote_mta: Optional[str] = None
    last_attempt: Optional[datetime] = None
    from_remote: bool = True  # Diagnostic-Code type "smtp" (a remote reply) or "X-mailappliance"


def _ascii(text: str, limit: int = 900) -> str:
    """Header-safe: printable ASCII on one line."""
    cleaned = "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in " ".join(text.split()))
    return cleaned[:limit]


def build_dsn(
    *,
    reporting_host: str,
    sender: str,
    failed: list[FailedRecipient],
    original: Optional[bytes],
    arrival: Optional[datetime],
    now: datetime,
    queue_id: str = "",
) -> bytes:
    boundary = f"dsn-{uuid.uuid4().hex}"
    host = _ascii(reporting_host, 255)
    lines = [
        f"From: Mail Delivery System <MAILER-DAEMON@{host}>",
        f"To: <{_ascii(sender, 300)}>",
        "Subject: Undelivered Mail Returned to Sender",
        f"Date: {format_datetime(now)}",
        f"Message-ID: <{uuid.uuid4().hex}@{host}>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
        "",
        "This is a MIME-encapsulated delivery status notification (RFC 3464).",
        "",
        f"--{boundary}",
        "Content-Type: text/plain; charset=us-ascii",
        "Content-Description: Notification",
        "",
        f"This is the mail system at host {host}.",
        "",
        "Your message could not be delivered to one or more recipients.",
        "It is attached below.",
        "",
    ]
    for rcpt in failed:
        lines.append(f"<{_ascii(rcpt.address, 300)}>: {_ascii(rcpt.diagnostic)}")
    lines += ["", f"--{boundary}", "Content-Type: message/delivery-status", "Content-Description: Delivery report", ""]
    lines.append(f"Reporting-MTA: dns; {host}")
    if queue_id:
        lines.append(f"X-Mailappliance-Queue-ID: {_ascii(queue_id, 64)}")
    if arrival is not None:
        lines.append(f"Arrival-Date: {format_datetime(arrival)}")
    for rcpt in failed:
        lines += [
            "",
            f"Final-Recipient: rfc822; {_ascii(rcpt.address, 300)}",
            "Action: failed",
            f"Status: {rcpt.status}",
        ]
        if rcpt.remote_mta:
            lines.append(f"Remote-MTA: dns; {_ascii(rcpt.remote_mta, 255)}")
        kind = "smtp" if rcpt.from_remote else "X-mailappliance"
        lines.append(f"Diagnostic-Code: {kind}; {_ascii(rcpt.diagnostic)}")
        if rcpt.last_attempt is not None:
            lines.append(f"Last-Attempt-Date: {format_datetime(rcpt.last_attempt)}")
    lines += ["", f"--{boundary}", "Content-Type: text/rfc822-headers", "Content-Description: Undelivered Message Headers", ""]
    body = "\r\n".join(lines).encode("ascii") + b"\r\n"
    if original:
        headers = header_section(original)[:MAX_ORIGINAL_HEADERS]
        if not headers.endswith(b"\r\n"):
            headers += b"\r\n"
        body += headers
    body += f"\r\n--{boundary}--\r\n".encode("ascii")
    return body

