"""Compose a message from the JSON of ``POST /api/send``: pure, no I/O.

``compose(payload, config)`` validates the request and returns the message bytes
(CRLF line endings, RFC 5322 §2.3) with the SMTP envelope, or raises
:class:`ComposeError` saying which field is wrong. The policy it applies:

* ``from`` is one mailbox (RFC 5322 §3.6.2) in one of the appliance's local domains;
  the appliance does not send as anyone else's domain.
* ``to``/``cc``/``bcc``/``replyTo`` are a string (one address) or a list; each item is
  ``"addr@example.com"``, ``"Name <addr@example.com>"`` or ``{"name", "address"}``.
  Every address must be an RFC 5321 §4.1.2 ``Mailbox`` (the parser the SMTP server
  uses); a non-ASCII domain is sent as its IDNA A-label; a non-ASCII local part is
  refused (it would need SMTPUTF8, RFC 6531, which this composer does not use).
* Bcc recipients are in the envelope only, never in the header (RFC 5322 §3.6.3).
* ``Date`` and ``Message-ID`` are generated (RFC 5322 §3.6.1, §3.6.4: the id's right
  side is the appliance's host name), with ``MIME-Version: 1.0`` (RFC 2045 §4).
* ``text`` and ``html`` together make ``multipart/alternative`` (RFC 2046 §5.1.4, the
  plain text first); attachments wrap the body in ``multipart/mixed`` with base64
  parts. Non-ASCII subjects, names and header values become RFC 2047 encoded words;
  non-ASCII filenames use RFC 2231 parameters.
* Extra ``headers`` may not contain CR, LF or other control characters (header
  injection) and may not replace what the composer or the servers own: the
  originator, destination, identification and MIME fields, Subject/Reply-To (they have
  their own fields), trace fields (RFC 5321 §4.4) and DKIM-Signature.
* The finished message is at most ``max_size`` bytes and the envelope holds at most
  ``max_recipients`` distinct addresses.
"""
from __future__ import annotations

import base64
import binascii
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email import policy
from email.errors import MessageError

import idna
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any, Callable, Optional

from mailappliance.protocol.addresses import Address, AddressError, parse_mailbox

FIELDS = ("from", "to", "cc", "bcc", "replyTo", "subject", "text", "html", "attachments", "headers")
# RFC 5322 §3.6.8: field-name = 1*ftext (printable US-ASCII except ":").
_FIELD_NAME = re.compile(r"[\x21-\x39\x3b-\x7e]+\Z")
# RFC 2045 §5.1: type "/" subtype, both tokens.
_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CONTENT_TYPE = re.compile(rf"({_TOKEN})/({_TOKEN})\Z")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # every C0 control but HTAB, and DEL
_NAME_AND_ADDRESS = re.compile(r"\s*(.*?)\s*<([^<>]*)>\s*\Z", re.S)

# Fields a caller may not set through ``headers``.
RESERVED_HEADERS = frozenset(
    {
        "from", "sender", "to", "cc", "bcc", "reply-to", "subject",  # RFC 5322 §3.6.2-3, §3.6.5
        "date", "message-id",  # §3.6.1, §3.6.4: generated here
        "mime-version",  # RFC 2045 §4
        "received", "return-path",  # RFC 5321 §4.4: trace fields are the servers' to add
        "dkim-signature",  # RFC 6376: added at delivery
        # Verdicts of receiving servers (RFC 8601, RFC 8617, RFC 7208 §9.1): a caller could
        # otherwise hand local recipients forged results bearing this host's name.
        "authentication-results", "received-spf", "arc-seal", "arc-message-signature", "arc-authentication-results",
    }
)
RESERVED_PREFIXES = ("content-", "resent-")  # RFC 2045 §3 MIME part headers; RFC 5322 §3.6.6
MAX_HEADER_VALUE = 4000  # characters of one extra header's value, before folding
MAX_HEADER_COUNT = 100
# CRLF, folding at 78 (RFC 5322 §2.1.1), and 7bit-clean bodies: non-ASCII text becomes
# quoted-printable or base64 (RFC 2045 §6), so no relay ever needs 8BITMIME (RFC 6152).
POLICY = policy.SMTP.clone(cte_type="7bit")


class ComposeError(ValueError):
    """The request cannot be made into a message; ``status`` is the HTTP status to answer."""

    status = 400

    def __init__(self, message: str, field: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class MessageTooLarge(ComposeError):
    """The finished message is larger than ``MAX_EMAIL_SIZE``."""

    status = 413


@dataclass(frozen=True)
class ComposeConfig:
    hostname: str  # SMTP_HOSTNAME: the right side of generated Message-IDs
    max_size: int  # MAX_EMAIL_SIZE, bytes of the finished message
    max_recipients: int  # SMTP_MAX_RECIPIENTS, distinct envelope recipients
    is_local_domain: Callable[[str], bool]  # may ``from`` use this domain?


@dataclass(frozen=True)
class Mailbox:
    """One address as the caller gave it: envelope form plus an optional display name."""

    address: Address
    name: str = ""

    def header(self) -> HeaderAddress:
        return HeaderAddress(display_name=self.name, addr_spec=self.address.address)


@dataclass
class ComposedMessage:
    message: bytes  # CRLF line endings, no trace headers yet
    mail_from: str  # RFC 5321 reverse-path
    recipients: list[Address]  # RFC 5321 forward-paths: to + cc + bcc, distinct, in order
    message_id: str  # with angle brackets
    subject: str
    headers: dict[str, str] = field(default_factory=dict)  # the extra headers as set


def compose(payload: Any, config: ComposeConfig, now: Optional[datetime] = None, message_id: Optional[str] = None) -> ComposedMessage:
    """Validate ``payload`` (the decoded JSON body) and build the message."""
    if not isinstance(payload, dict):
        raise ComposeError("the request body must be a JSON object")
    unknown = sorted(str(k) for k in payload if k not in FIELDS)
    if unknown:
        raise ComposeError(f"unknown field(s): {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")

    sender = _single_mailbox(payload.get("from"), "from")
    if not config.is_local_domain(sender.address.domain):
        raise ComposeError(f"from: {sender.address.domain} is not a local domain of this appliance", "from")
    to = _mailboxes(payload.get("to"), "to")
    cc = _mailboxes(payload.get("cc"), "cc")
    bcc = _mailboxes(payload.get("bcc"), "bcc")
    reply_to = _mailboxes(payload.get("replyTo"), "replyTo")
    recipients = _distinct([m.address for m in to + cc + bcc])
    if not recipients:
        raise ComposeError("at least one recipient is required in to, cc or bcc", "to")
    if len(recipients) > config.max_recipients:
        raise ComposeError(f"too many recipients: {len(recipients)} (at most {config.max_recipients})", "to")

    subject = _optional_text(payload.get("subject"), "subject", header=True)
    text = _optional_text(payload.get("text"), "text")
    html = _optional_text(payload.get("html"), "html")
    attachments = _attachments(payload.get("attachments"))
    extra = _extra_headers(payload.get("headers"))
    if text is None and html is None and not attachments:
        raise ComposeError("nothing to send: give text, html or attachments", "text")

    when = now or datetime.now(timezone.utc)
    msg_id = message_id or f"<{secrets.token_hex(16)}@{config.hostname}>"
    msg = EmailMessage(policy=POLICY)
    try:
        msg["Date"] = format_datetime(when)
        msg["From"] = sender.header()
        if reply_to:
            msg["Reply-To"] = [m.header() for m in reply_to]
        if to:
            msg["To"] = [m.header() for m in to]
        if cc:
            msg["Cc"] = [m.header() for m in cc]
        if subject is not None:
            msg["Subject"] = subject
        msg["Message-ID"] = msg_id
        msg["MIME-Version"] = "1.0"
        for name, value in extra.items():
            msg[name] = value
        _set_body(msg, text, html, attachments)
        raw = msg.as_bytes()
    except (ValueError, TypeError, IndexError, AttributeError, MessageError) as exc:
        raise ComposeError(f"the message cannot be encoded: {exc}") from None
    if len(raw) > config.max_size:
        raise MessageTooLarge(f"the message is {len(raw)} bytes, over the {config.max_size}-byte limit (MAX_EMAIL_SIZE)")
    return ComposedMessage(
        message=raw,
        mail_from=sender.address.address,
        recipients=recipients,
        message_id=msg_id,
        subject=subject or "",
        headers=extra,
    )


# ---------------------------------------------------------------------- addresses
def parse_mailbox_item(item: Any, where: str) -> Mailbox:
    """One ``"addr"``, ``"Name <addr>"`` or ``{"name", "address"}``."""
    if isinstance(item, dict):
        unknown = sorted(str(k) for k in item if k not in ("name", "address"))
        if unknown:
            raise ComposeError(f"{where}: unknown key(s) {', '.join(unknown)}; use name and address", where)
        name, text = item.get("name") or "", item.get("address")
        if not isinstance(name, str) or not isinstance(text, str):
            raise ComposeError(f"{where}: name and address must be strings", where)
    elif isinstance(item, str):
        if _CONTROL.search(item):
            raise ComposeError(f"{where}: control characters (CR, LF, ...) are not allowed in addresses or names", where)
        match = _NAME_AND_ADDRESS.match(item)
        name, text = (match.group(1), match.group(2)) if match else ("", item)
        if len(name) >= 2 and name[0] == name[-1] == '"':
            name = re.sub(r"\\(.)", r"\1", name[1:-1])
    else:
        raise ComposeError(f"{where}: an address must be a string or an object with name and address", where)
    if _CONTROL.search(name) or _CONTROL.search(text):
        raise ComposeError(f"{where}: control characters (CR, LF, ...) are not allowed in addresses or names", where)
    text = text.strip()
    try:
        address = parse_mailbox(text)
    except AddressError as exc:
        raise ComposeError(f"{where}: {text!r} is not a valid address ({exc})", where) from None
    if not address.local.isascii():
        raise ComposeError(f"{where}: {text!r} has a non-ASCII local part, which needs SMTPUTF8 (RFC 6531)", where)
    if not address.domain.isascii() or "xn--" in address.domain.lower():
        # IDNA 2008 with UTS #46 mapping (RFC 5891), not Python's IDNA 2003 codec, which
        # maps "ß" to "ss" and so would queue mail for another domain; invalid A-labels
        # ("xn--zz") are refused too.
        try:
            address = Address(address.local, idna.encode(address.domain, uts46=True, transitional=False).decode("ascii"))
        except (idna.IDNAError, UnicodeError):
            raise ComposeError(f"{where}: {text!r} has a domain that is not a valid IDNA name", where) from None
    return Mailbox(address, name.strip())


def _single_mailbox(value: Any, where: str) -> Mailbox:
    if value is None or value == "":
        raise ComposeError(f"{where} is required", where)
    if isinstance(value, list):
        raise ComposeError(f"{where} must be a single address", where)
    return parse_mailbox_item(value, where)


def _mailboxes(value: Any, where: str) -> list[Mailbox]:
    if value is None or value == "" or value == []:
        return []
    items = value if isinstance(value, list) else [value]
    return [parse_mailbox_item(item, f"{where}[{i}]" if isinstance(value, list) else where) for i, item in enumerate(items)]


def _distinct(addresses: list[Address]) -> list[Address]:
    seen: set[tuple[str, str]] = set()
    result = []
    for address in addresses:
        key = (address.local.lower(), address.domain)
        if key not in seen:
            seen.add(key)
            result.append(address)
    return result


# ---------------------------------------------------------------------- content
def _optional_text(value: Any, where: str, header: bool = False) -> Optional[str]:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ComposeError(f"{where} must be a string", where)
    if header and _CONTROL.search(value):
        raise ComposeError(f"{where}: control characters (CR, LF, ...) are not allowed in a header", where)
    if not header and "\x00" in value:
        raise ComposeError(f"{where}: NUL characters are not allowed", where)
    return value


@dataclass(frozen=True)
class Attachment:
    filename: str
    maintype: str
    subtype: str
    content: bytes


def _attachments(value: Any) -> list[Attachment]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ComposeError("attachments must be a list", "attachments")
    result = []
    for i, item in enumerate(value):
        where = f"attachments[{i}]"
        if not isinstance(item, dict):
            raise ComposeError(f"{where} must be an object with filename, contentType and content", where)
        unknown = sorted(str(k) for k in item if k not in ("filename", "contentType", "content"))
        if unknown:
            raise ComposeError(f"{where}: unknown key(s) {', '.join(unknown)}", where)
        filename = item.get("filename")
        if not isinstance(filename, str) or not filename.strip():
            raise ComposeError(f"{where}.filename is required", where)
        if _CONTROL.search(filename) or "/" in filename or "\\" in filename:
            raise ComposeError(f"{where}.filename may not contain control characters or path separators", where)
        content_type = item.get("contentType") or "application/octet-stream"
        match = _CONTENT_TYPE.match(content_type) if isinstance(content_type, str) else None
        if match is None:
            raise ComposeError(f"{where}.contentType must be type/subtype (RFC 2045 §5.1)", where)
        maintype, subtype = match.group(1).lower(), match.group(2).lower()
        if maintype in ("multipart", "message"):
            # RFC 2046 §5.1 and §5.2.1: these may not be base64-encoded.
            raise ComposeError(f"{where}.contentType {maintype}/* cannot be attached as base64; use application/octet-stream", where)
        content = item.get("content")
        if not isinstance(content, str):
            raise ComposeError(f"{where}.content must be a base64 string", where)
        try:
            data = base64.b64decode("".join(content.split()), validate=True)
        except (binascii.Error, ValueError):
            raise ComposeError(f"{where}.content is not valid base64 (RFC 4648 §4)", where) from None
        result.append(Attachment(filename.strip(), maintype, subtype, data))
    return result


def _extra_headers(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ComposeError("headers must be an object of name: value", "headers")
    if len(value) > MAX_HEADER_COUNT:
        raise ComposeError(f"too many headers (at most {MAX_HEADER_COUNT})", "headers")
    result: dict[str, str] = {}
    for name, text in value.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            raise ComposeError(f"headers: {name!r} is not a valid header name (RFC 5322 §3.6.8)", "headers")
        lower = name.lower()
        if lower in RESERVED_HEADERS or lower.startswith(RESERVED_PREFIXES):
            raise ComposeError(f"headers: {name} cannot be set here; it is generated or has its own field", "headers")
        if any(lower == other.lower() for other in result):
            raise ComposeError(f"headers: {name} is given twice (names are case-insensitive, RFC 5322 §1.2.2)", "headers")
        if not isinstance(text, str):
            raise ComposeError(f"headers: the value of {name} must be a string", "headers")
        if _CONTROL.search(text):
            raise ComposeError(f"headers: the value of {name} contains CR, LF or another control character", "headers")
        if len(text) > MAX_HEADER_VALUE:
            raise ComposeError(f"headers: the value of {name} is longer than {MAX_HEADER_VALUE} characters", "headers")
        result[name] = text
    return result


def _set_body(msg: EmailMessage, text: Optional[str], html: Optional[str], attachments: list[Attachment]) -> None:
    """text/plain, text/html or multipart/alternative (RFC 2046 §5.1.4), in multipart/mixed
    when there are attachments (§5.1.3)."""
    if text is not None:
        msg.set_content(text)
        if html is not None:
            msg.add_alternative(html, subtype="html")
    elif html is not None:
        msg.set_content(html, subtype="html")
    for attachment in attachments:
        msg.add_attachment(
            attachment.content, maintype=attachment.maintype, subtype=attachment.subtype, filename=attachment.filename
        )
    for part in msg.walk():
        if part is not msg:
            del part["MIME-Version"]  # RFC 2045 §4: required at the top level only
