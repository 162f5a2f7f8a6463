"""Trace headers this server adds: Received (RFC 5321 §4.4) and Return-Path (§4.4)."""
from __future__ import annotations

from datetime import datetime
from email.utils import format_datetime
from typing import Optional


def _clean(text: str) -> str:
    """Keep a client-supplied name from breaking the header (no CR/LF, no parentheses)."""
    return "".join(ch for ch in text if ch.isprintable() and ch not in "()\r\n")[:255] or "unknown"


def received_header(
    *,
    helo: str,
    peer_ip: str,
    peer_name: Optional[str],
    hostname: str,
    protocol: str,
    queue_id: str,
    recipient: Optional[str],
    when: datetime,
) -> bytes:
    """``Received: from HELO (NAME [IP]) by HOST (mailappliance) with PROTO id ID for <R>; DATE``.

    ``for`` is given only for a single recipient so the header never discloses Bcc
    recipients to the others.
    """
    literal = f"IPv6:{peer_ip}" if ":" in peer_ip else peer_ip
    who = f"{_clean(peer_name)} [{literal}]" if peer_name else f"[{literal}]"
    line = f"Received: from {_clean(helo or 'unknown')} ({who})\r\n\tby {hostname} (mailappliance) with {protocol} id {queue_id}"
    if recipient:
        line += f"\r\n\tfor <{recipient}>"
    line += f"; {format_datetime(when)}\r\n"
    return line.encode("utf-8")


def return_path_header(sender: str) -> bytes:
    """RFC 5321 §4.4: the final delivery records the reverse-path."""
    return f"Return-Path: <{sender}>\r\n".encode("utf-8")
