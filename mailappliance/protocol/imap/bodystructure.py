"""ENVELOPE, BODY and BODYSTRUCTURE from the summary stored at delivery (RFC 3501 §7.4.2).

The stored ``envelope`` and ``structure`` (``services/mime.py``) carry everything
except the size and line count of message/rfc822 parts, which are measured in the raw
bytes (:mod:`.sections`) when the caller supplies them; :func:`structure_needs_raw`
says when that is.

Output follows Dovecot's shape: type, subtype, parameter names and disposition kinds
in the lower case stored at delivery, every extension field written (NIL when
absent), no invented default charset.
"""
from __future__ import annotations

from typing import Any, Iterable, Optional, Sequence

from mailappliance.protocol.imap.encode import nstring, string
from mailappliance.protocol.imap.sections import Entity, count_lines

NIL = b"NIL"
# Served when a document has no structure and no raw bytes were given.
_UNKNOWN: dict[str, Any] = {"type": "text", "subtype": "plain", "params": [], "encoding": "7bit", "size": 0, "lines": 0}
_EMPTY_PART = _UNKNOWN  # RFC 3501 needs 1*body in a multipart: Dovecot writes one empty part
_ENVELOPE_FIELDS = ("date", "subject", "from", "sender", "reply_to", "to", "cc", "bcc", "in_reply_to", "message_id")


def structure_needs_raw(node: Any) -> bool:
    """True when rendering ``node`` needs the raw bytes: it is missing, or some part's
    size is unknown (message/rfc822 parts, measured in the raw message)."""
    if not isinstance(node, dict) or not node:
        return True
    if node.get("opaque"):
        return False
    if (node.get("type") or "").lower() == "multipart":
        return any(structure_needs_raw(child) for child in node.get("parts") or ())
    if node.get("size") is None:
        return True
    inner = node.get("message")
    return isinstance(inner, dict) and structure_needs_raw(inner.get("structure"))


def body_structure(node: Any, raw: Optional[bytes], extensible: bool = True) -> bytes:
    """``BODYSTRUCTURE`` (``extensible``) or ``BODY`` value for a message; never raises.

    A missing structure is summarised from ``raw`` as delivery would; an opaque one
    (too complex to parse at delivery) is served as stored, one application/octet-stream
    part.
    """
    if not isinstance(node, dict) or not node:
        node = _summarize(raw) if raw is not None else _UNKNOWN
    entity = Entity(raw, 0, len(raw)) if raw is not None and structure_needs_raw(node) else None
    return _body(node, entity, extensible)


def _summarize(raw: bytes) -> dict:
    # services/mime.py is pure (no I/O); imported here only for legacy documents.
    from mailappliance.services.mime import summarize

    return summarize(raw).structure or _UNKNOWN


def _body(node: dict, entity: Optional[Entity], ext: bool) -> bytes:
    """One ``body`` (RFC 3501 §9); ``entity`` is the same part in the raw bytes, if given."""
    kind = (node.get("type") or "text").lower()
    subtype = node.get("subtype") or ("mixed" if kind == "multipart" else "plain")
    if kind == "multipart" and not node.get("opaque"):
        children = node.get("parts") or [_EMPTY_PART]
        entities: Sequence[Optional[Entity]] = entity.parts() if entity is not None else ()
        bodies = b"".join(
            _body(child, entities[i] if i < len(entities) else None, ext) for i, child in enumerate(children)
        )
        fields = [bodies + b" " + string(subtype)]
        if ext:
            fields += [_params(node.get("params")), _disposition(node.get("disposition")),
                       _language(node.get("language")), nstring(node.get("location"))]
        return b"(" + b" ".join(fields) + b")"
    inner = node.get("message")
    rfc822 = kind == "message" and subtype.lower() == "rfc822"
    size, lines = node.get("size"), node.get("lines")
    if size is None or (rfc822 and lines is None):
        body = entity.body if entity is not None else b""
        size, lines = len(body), count_lines(body)
    fields = [
        string(kind), string(subtype), _params(node.get("params")), nstring(node.get("id")),
        nstring(node.get("description")), string(node.get("encoding") or "7bit"), b"%d" % size,
    ]
    if rfc822:
        if isinstance(inner, dict) and isinstance(inner.get("structure"), dict) and inner["structure"]:
            inner_entity = entity.encapsulated() if entity is not None else None
            fields += [envelope(inner.get("envelope")), _body(inner["structure"], inner_entity, ext)]
        else:  # not parsed at delivery (nesting limit): the grammar still needs both
            fields += [envelope(None), _body(_UNKNOWN, None, ext)]
        fields.append(b"%d" % (lines or 0))
    elif kind == "text":
        fields.append(b"%d" % (lines or 0))
    if ext:
        fields += [nstring(node.get("md5")), _disposition(node.get("disposition")),
                   _language(node.get("language")), nstring(node.get("location"))]
    return b"(" + b" ".join(fields) + b")"


def _params(pairs: Any) -> bytes:
    """``body-fld-param``: ``("name" "value" ...)`` or NIL."""
    items = [p for p in pairs or () if isinstance(p, (list, tuple)) and len(p) == 2]
    if not items:
        return NIL
    return b"(" + b" ".join(string(name or "") + b" " + string(value or "") for name, value in items) + b")"


def _disposition(value: Any) -> bytes:
    """``body-fld-dsp``: ``("attachment" ("filename" "a.pdf"))`` or NIL."""
    if not value or not isinstance(value, (list, tuple)) or not value[0]:
        return NIL
    params = value[1] if len(value) > 1 else None
    return b"(" + string(value[0]) + b" " + _params(params) + b")"


def _language(value: Optional[str]) -> bytes:
    """``body-fld-lang``: one tag as a string, several as a list (``Content-Language: en, fr``)."""
    tags = [t.strip() for t in (value or "").split(",") if t.strip()]
    if not tags:
        return NIL
    if len(tags) == 1:
        return string(tags[0])
    return b"(" + b" ".join(string(t) for t in tags) + b")"


def envelope(value: Any) -> bytes:
    """``envelope`` (RFC 3501 §7.4.2): sender and reply-to default to from; header text
    stays as written (encoded words are not decoded)."""
    env = value if isinstance(value, dict) else {}
    groups = env.get("groups") or {}
    out = []
    for name in _ENVELOPE_FIELDS:
        if name in ("from", "sender", "reply_to", "to", "cc", "bcc"):
            source = name if env.get(name) or name in groups or name not in ("sender", "reply_to") else "from"
            if source in groups:
                out.append(_group_list(groups[source]))
                continue
            out.append(_address_list(env.get(source)))
        else:
            out.append(nstring(env.get(name)))
    return b"(" + b" ".join(out) + b")"


def _group_list(entries: Any) -> bytes:
    """An address list kept with its group markers (RFC 3501 §7.4.2): NIL stays NIL."""
    items = [
        b"(%s %s %s %s)" % tuple(nstring(part) for part in entry)
        for entry in entries or ()
        if isinstance(entry, (list, tuple)) and len(entry) == 4
    ]
    return b"(" + b"".join(items) + b")" if items else NIL


def _address_list(addresses: Optional[Iterable[Any]]) -> bytes:
    """``(address...)`` or NIL; each ``(name adl mailbox host)``.

    A missing mailbox or host is sent as ``""``, not NIL: NIL host marks RFC 2822
    group syntax (RFC 3501 §7.4.2), which the stored summary does not keep.
    """
    items = []
    for entry in addresses or ():
        if not isinstance(entry, (list, tuple)) or len(entry) != 4:
            continue
        name, adl, mailbox, host = entry
        items.append(b"(%s %s %s %s)" % (nstring(name), nstring(adl), string(mailbox or ""), string(host or "")))
    return b"(" + b"".join(items) + b")" if items else NIL
