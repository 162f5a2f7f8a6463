"""What the appliance records about a message's content, parsed once at delivery.

Uses the stdlib ``email`` package (compat32 policy: lenient, keeps raw header text).
The result feeds ``incoming_emails`` (subject, message-id, attachment list) and the
IMAP server's ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2), which need raw header
values and per-part sizes in octets. Malformed mail never raises: it is summarised
as well as it can be and stored anyway.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from email import policy
from email.header import Header, decode_header, make_header
from email.message import Message
from email.parser import BytesParser
from email.utils import collapse_rfc2231_value, getaddresses
from typing import Any, Optional

log = logging.getLogger("mailappliance.mime")

_PARSER = BytesParser(policy=policy.compat32)
MAX_DEPTH = 20  # nested multiparts deeper than this are summarised as opaque
# Past these, the stdlib parser would spend seconds and hundreds of MB on one hostile
# message while the hub waits; such mail is stored with an opaque structure instead.
MAX_BOUNDARY_LINES = 1000  # lines starting with "--": an upper bound on MIME parts
MAX_HEADER_LINES = 5000
MAX_REFERENCES = 100  # message-ids kept from References


@dataclass
class MessageSummary:
    subject: str = ""
    message_id: str = ""
    from_: str = ""
    to: list[str] = field(default_factory=list)
    date: str = ""
    references: list[str] = field(default_factory=list)  # RFC 5256 THREAD=REFERENCES
    attachments: list[dict] = field(default_factory=list)
    envelope: dict = field(default_factory=dict)
    structure: dict = field(default_factory=dict)
    defects: int = 0

    def message_fields(self) -> dict:
        """What a ``messages`` document keeps of the summary (IMAP ENVELOPE, BODYSTRUCTURE,
        SEARCH, SORT and THREAD read these; the API shows subject, message-id and from)."""
        return {
            "subject": self.subject,
            "message_id": self.message_id,
            "from": self.from_,
            "envelope": self.envelope,
            "structure": self.structure,
            "references": self.references,
        }


def decode_text(value: Optional[str]) -> str:
    """Decode RFC 2047 encoded words; fall back to the raw text when they are broken."""
    if not value:
        return ""
    text = _raw(value)
    if "=?" not in text:
        return " ".join(text.split())
    try:
        return str(make_header(decode_header(text))).strip()
    except (ValueError, LookupError, UnicodeError, TypeError):
        return text.strip()


def _raw(value: Any) -> str:
    """A header value as text, undoing the parser's surrogate escapes for 8-bit bytes."""
    if value is None:
        return ""
    if isinstance(value, tuple):  # an RFC 2231 (charset, language, value) parameter
        return collapse_rfc2231_value(value)
    if isinstance(value, Header):  # compat32 returns raw 8-bit header text this way
        return "".join(_bytes_text(chunk, charset) for chunk, charset in decode_header(value))
    return str(value).encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _bytes_text(chunk: Any, charset: Optional[str]) -> str:
    if isinstance(chunk, str):
        return chunk
    if charset and charset != "unknown-8bit":
        try:
            return chunk.decode(charset, "replace")
        except LookupError:
            pass
    try:
        return chunk.decode("utf-8")
    except UnicodeDecodeError:
        return chunk.decode("latin-1")


def _addresses(msg: Message, name: str) -> list[list[Optional[str]]]:
    """IMAP address structures ``[name, adl, mailbox, host]`` (RFC 3501 §7.4.2)."""
    values = msg.get_all(name)
    if not values:
        return []
    result = []
    for display, addr in getaddresses([_raw(v) for v in values]):
        if not addr and not display:
            continue
        local, _, host = addr.rpartition("@") if "@" in addr else (addr, "", "")
        result.append([display or None, None, local or None, host or None])
    return result


def envelope(msg: Message) -> dict:
    """ENVELOPE fields with raw (still encoded) header text, as IMAP returns them."""
    def header(name: str) -> Optional[str]:
        value = msg.get(name)
        return None if value is None else _raw(value).replace("\r\n", "").replace("\n", "")

    result: dict[str, Any] = {
        "date": header("Date"),
        "subject": header("Subject"),
        "from": _addresses(msg, "From"),
        "sender": _addresses(msg, "Sender"),
        "reply_to": _addresses(msg, "Reply-To"),
        "to": _addresses(msg, "To"),
        "cc": _addresses(msg, "Cc"),
        "bcc": _addresses(msg, "Bcc"),
        "in_reply_to": header("In-Reply-To"),
        "message_id": header("Message-ID"),
    }
    groups = _groups(msg)
    if groups:
        result["groups"] = groups
    return result


_ADDRESS_FIELDS = {"from": "From", "sender": "Sender", "reply_to": "Reply-To", "to": "To", "cc": "Cc", "bcc": "Bcc"}


def _groups(msg: Message) -> dict:
    """Address fields that use RFC 5322 group syntax (``undisclosed-recipients:;``), as
    IMAP address lists with the group start ``(NIL NIL name NIL)`` and end
    ``(NIL NIL NIL NIL)`` markers of RFC 3501 §7.4.2. Only such fields are kept; the
    flat lists beside them serve search and sort."""
    found = {}
    for key, name in _ADDRESS_FIELDS.items():
        values = msg.get_all(name)
        if not values or not any(":" in _raw(v) and ";" in _raw(v) for v in values):
            continue
        try:
            header = policy.default.header_factory(name, ", ".join(_raw(v) for v in values))
            groups = header.groups  # type: ignore[attr-defined]
        except Exception:  # malformed: the flat list stands
            continue
        if not any(group.display_name is not None for group in groups):
            continue
        entries: list[list[Optional[str]]] = []
        for group in groups:
            if group.display_name is not None:
                entries.append([None, None, group.display_name, None])
            for address in group.addresses:
                entries.append([address.display_name or None, None, address.username or None, address.domain or None])
            if group.display_name is not None:
                entries.append([None, None, None, None])
        found[key] = entries
    return found


def message_ids(text: str) -> list[str]:
    """The ``<msg-id>`` tokens of a References or In-Reply-To header, in order (RFC 5322 §3.6.4)."""
    return re.findall(r"<[^<>\s]+>", text or "")[:MAX_REFERENCES]


def _octets(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _optional(value: Any) -> Optional[str]:
    return None if value is None else _raw(value)


def _params(msg: Message, header: str) -> list[list[str]]:
    """Parameters as ``[name, value]`` pairs: names come from the sender, and a name
    may hold characters (NUL, '.', '$') that cannot be a MongoDB field name."""
    return [[_raw(k).lower(), _raw(v)] for k, v in (msg.get_params(header=header) or [])[1:]]


def structure(msg: Message, depth: int = 0) -> dict:
    """One MIME part as a tree node; sizes count octets of the encoded body."""
    maintype = _raw(msg.get_content_maintype())
    node: dict[str, Any] = {
        "type": maintype,
        "subtype": _raw(msg.get_content_subtype()),
        "params": _params(msg, "content-type"),
        "id": _optional(msg.get("Content-ID")),
        "description": _optional(msg.get("Content-Description")),
        "encoding": _raw(msg.get("Content-Transfer-Encoding") or "7bit").strip().lower(),
        "md5": _optional(msg.get("Content-MD5")),
        "disposition": None,
        "language": _optional(msg.get("Content-Language")),
        "location": _optional(msg.get("Content-Location")),
    }
    disposition = msg.get("Content-Disposition")
    if disposition:
        kind = _raw(disposition).split(";", 1)[0].strip().lower()
        node["disposition"] = [kind, _params(msg, "content-disposition")]
    if msg.is_multipart() and depth < MAX_DEPTH:
        parts: list[Message] = [p for p in msg.get_payload() if isinstance(p, Message)]
        if maintype == "message" and parts:
            inner = parts[0]
            node["message"] = {"envelope": envelope(inner), "structure": structure(inner, depth + 1)}
            # The parser keeps no octet offsets and re-serialising may change bytes, so
            # the exact size and line count of an encapsulated message are left to
            # whoever reads the raw bytes (IMAP BODYSTRUCTURE), rather than guessed.
            node["size"] = None
            node["lines"] = None
        else:
            node["parts"] = [structure(part, depth + 1) for part in parts]
        return node
    body = msg.get_payload()
    octets = _octets(body) if isinstance(body, str) else b""
    node["size"] = len(octets)
    node["lines"] = octets.count(b"\n") + (1 if octets and not octets.endswith(b"\n") else 0)
    return node


def attachments(msg: Message) -> list[dict]:
    found = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        filename = part.get_filename()
        disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
        if filename is None and disposition != "attachment":
            continue
        try:
            payload = part.get_payload(decode=True) or b""
        except Exception:  # malformed transfer encoding
            payload = b""
        found.append(
            {
                "filename": decode_text(filename) if filename else None,
                "contentType": _raw(part.get_content_type()),
                "size": len(payload),
            }
        )
    return found


def _single_part(raw: bytes) -> Optional[Message]:
    """Parse only the header block when the message is one part (the common case).

    The full parser walks every body line; a single-part body needs only its size
    and line count, which bytes operations give for a fraction of the cost.
    """
    end = raw.find(b"\r\n\r\n")
    if end <= 0:
        return None
    msg = _PARSER.parsebytes(raw[: end + 2], headersonly=True)
    if msg.defects or msg.get_payload() or msg.get_content_maintype() in ("multipart", "message"):
        return None  # not a clean header block, or more than one part: parse it all
    msg.set_payload(raw[end + 4 :].decode("ascii", "surrogateescape"))
    return msg


def too_complex(raw: bytes) -> Optional[str]:
    header_end = raw.find(b"\r\n\r\n")
    header = raw if header_end < 0 else raw[:header_end]
    if header.count(b"\n") > MAX_HEADER_LINES:
        return f"more than {MAX_HEADER_LINES} header lines"
    if raw.count(b"\n--") > MAX_BOUNDARY_LINES:
        return f"more than {MAX_BOUNDARY_LINES} MIME boundary lines"
    return None


def _opaque(raw: bytes, reason: str) -> MessageSummary:
    """A summary that does not parse the body: for mail too complex to parse safely."""
    log.warning("message of %d bytes not parsed (%s); storing it with an opaque structure", len(raw), reason)
    end = raw.find(b"\r\n\r\n")
    body = raw[end + 4 :] if end >= 0 else raw
    return MessageSummary(
        structure={
            "type": "application", "subtype": "octet-stream", "params": [], "id": None, "description": None,
            "encoding": "7bit", "md5": None, "disposition": None, "language": None, "location": None,
            "size": len(body), "lines": body.count(b"\n"), "opaque": reason,
        },
        defects=1,
    )


def summarize(raw: bytes) -> MessageSummary:
    """Parse ``raw`` once; never raises, and never spends unbounded time on hostile mail."""
    reason = too_complex(raw)
    if reason is not None:
        return _opaque(raw, reason)
    try:
        msg = _single_part(raw) or _PARSER.parsebytes(raw)
        return MessageSummary(
            subject=decode_text(msg.get("Subject")),
            message_id=_raw(msg.get("Message-ID")).strip(),
            from_=decode_text(msg.get("From")),
            to=[addr for _, addr in getaddresses([_raw(v) for v in msg.get_all("To") or []]) if addr],
            date=_raw(msg.get("Date")).strip(),
            references=message_ids(_raw(msg.get("References"))),
            attachments=attachments(msg),
            envelope=envelope(msg),
            structure=structure(msg),
            defects=sum(len(part.defects) for part in msg.walk()),
        )
    except Exception as exc:  # the parser is lenient, but malformed mail must still be stored
        return _opaque(raw, f"parser failed: {str(exc)[:100]}")
