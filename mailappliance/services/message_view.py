"""A stored message as the API shows it: headers, the text and HTML bodies, the attachments.

Parsed with the stdlib ``email`` package under ``policy.default`` (RFC 5322 headers
decoded, RFC 2045-2047 MIME bodies and encoded words). Never raises: a message that
is malformed, or too complex to parse safely (``mime.too_complex``), shows what can be
read of it - the raw header lines, no body.
"""
from __future__ import annotations

from email import policy
from email.message import EmailMessage, Message
from email.parser import BytesParser
from typing import Any, Optional

from mailappliance.services import mime

_PARSER = BytesParser(policy=policy.default)
MAX_BODY_CHARS = 1_000_000  # a text or HTML body longer than this is cut (the raw endpoint has all)


def view(raw: bytes) -> dict[str, Any]:
    """``{"headers": [[name, value], ...], "text", "html", "attachments": [...]}``."""
    if mime.too_complex(raw) is not None:
        return {"headers": _raw_headers(raw), "text": None, "html": None, "attachments": []}
    try:
        msg = _PARSER.parsebytes(raw)
    except Exception:  # the parser is lenient; this is a last resort
        return {"headers": _raw_headers(raw), "text": None, "html": None, "attachments": []}
    assert isinstance(msg, EmailMessage)
    return {
        "headers": [[name, _header_value(msg, name, value)] for name, value in msg.raw_items()],
        "text": _body(msg, "plain"),
        "html": _body(msg, "html"),
        "attachments": _attachments(msg),
    }


def _header_value(msg: EmailMessage, name: str, raw_value: str) -> str:
    """The decoded value (RFC 2047 encoded words undone), else the raw text unfolded."""
    try:
        return str(msg.policy.header_fetch_parse(name, raw_value))
    except Exception:
        return mime.decode_text(raw_value)


def _body(msg: EmailMessage, subtype: str) -> Optional[str]:
    """The body RFC 2046 §5.1.4 / RFC 2387 would show for ``text/<subtype>`` (``get_body``)."""
    try:
        part = msg.get_body(preferencelist=(subtype,))
    except Exception:
        return None
    if part is None or part.get_content_subtype() != subtype:
        return None
    try:
        text = part.get_content()
    except Exception:  # an unknown charset or a broken transfer encoding
        text = _decoded(part)
    if not isinstance(text, str):
        return None
    return text[:MAX_BODY_CHARS]


def _decoded(part: Message) -> str:
    try:
        payload = part.get_payload(decode=True) or b""
    except Exception:
        return ""
    if not isinstance(payload, bytes):
        return ""
    return payload.decode("utf-8", "replace")


def _attachments(msg: EmailMessage) -> list[dict]:
    """Parts with a file name or ``Content-Disposition: attachment`` (RFC 2183), at any depth,
    listed as ``incoming_emails`` lists them."""
    try:
        return mime.attachments(msg)
    except Exception:
        return []


def _raw_headers(raw: bytes) -> list[list[str]]:
    end = raw.find(b"\r\n\r\n")
    block = raw[: end if end >= 0 else min(len(raw), 64 * 1024)].decode("utf-8", "replace")
    headers: list[list[str]] = []
    for line in block.replace("\r\n", "\n").split("\n"):
        if line[:1] in (" ", "\t") and headers:
            headers[-1][1] += " " + line.strip()
        elif ":" in line:
            name, value = line.split(":", 1)
            headers.append([name.strip(), value.strip()])
        if len(headers) >= mime.MAX_HEADER_LINES:
            break
    return headers
