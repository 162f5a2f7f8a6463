"""FETCH response data for one message (RFC 3501 §6.4.5, §7.4.2; MODSEQ per RFC 7162 §3.1.4).

Pure: a stored message document (``storage/messages.py``, summary from
``services/mime.py``) and, only when :func:`needs_raw` says so, its raw bytes, in;
the inside of ``* n FETCH (...)`` out. Flags come from the session, which adds
``\\Recent`` and any ``\\Seen`` it has just set.

A body section whose part does not exist is sent as the empty string ``""``
(Dovecot sends NIL; both are valid ``nstring``, and ``""`` is what most clients
expect of a section). Body section data always goes as a literal when not empty,
byte for byte as stored.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional, Sequence

from mailappliance.protocol.imap.bodystructure import body_structure, envelope, structure_needs_raw
from mailappliance.protocol.imap.encode import date_time, flag_list, literal
from mailappliance.protocol.imap.sections import section_bytes
from mailappliance.protocol.imap.types import FetchAttribute, Section

EMPTY = b'""'
_NO_DATE = datetime(1970, 1, 1, tzinfo=timezone.utc)
# RFC822.* are the RFC 1730 names of these sections (RFC 3501 §6.4.5).
_RFC822_SECTIONS = {"RFC822": Section(), "RFC822.HEADER": Section(text="HEADER"), "RFC822.TEXT": Section(text="TEXT")}
_NEVER_RAW = frozenset({"FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "MODSEQ"})


def needs_raw(attributes: Sequence[FetchAttribute], doc: dict) -> bool:
    """True only when some attribute needs the message's bytes: a body section, RFC822,
    RFC822.HEADER, RFC822.TEXT, or BODY/BODYSTRUCTURE whose stored structure is missing
    or has a message/rfc822 part (its size and lines are measured in the bytes)."""
    structure_checked = False
    for attribute in attributes:
        if attribute.name in _NEVER_RAW:
            continue
        if attribute.section is not None or attribute.name in _RFC822_SECTIONS:
            return True
        if attribute.name in ("BODY", "BODYSTRUCTURE") and not structure_checked:
            if structure_needs_raw(doc.get("structure")):
                return True
            structure_checked = True
    return False


def render(doc: dict, attributes: Sequence[FetchAttribute], raw: Optional[bytes], flags: Sequence[str]) -> bytes:
    """``msg-att`` items (RFC 3501 §7.4.2) in the order requested, each response name once.

    ``raw`` must be given when :func:`needs_raw` is true; without it, sections render
    as ``""`` rather than failing.
    """
    items: list[bytes] = []
    seen: set[str] = set()
    for attribute in attributes:
        name = attribute.response_name()
        if name in seen:
            continue
        seen.add(name)
        items.append(name.encode("ascii", "replace") + b" " + _value(doc, attribute, raw, flags))
    return b" ".join(items)


def _value(doc: dict, attribute: FetchAttribute, raw: Optional[bytes], flags: Sequence[str]) -> bytes:
    name = attribute.name
    if name == "UID":
        return b"%d" % doc["uid"]
    if name == "FLAGS":
        return flag_list(flags)
    if name == "MODSEQ":
        return b"(%d)" % (doc.get("modseq") or 0)
    if name == "INTERNALDATE":
        return date_time(doc.get("internal_date") or _NO_DATE)
    if name == "RFC822.SIZE":
        size = doc.get("size")
        return b"%d" % (size if size is not None else len(raw or b""))
    if name == "ENVELOPE":
        return envelope(doc.get("envelope"))
    if name in _RFC822_SECTIONS:
        return _section(doc, _RFC822_SECTIONS[name], None, raw)
    if name in ("BODY", "BODYSTRUCTURE") and attribute.section is None:
        return body_structure(doc.get("structure"), raw, extensible=name == "BODYSTRUCTURE")
    if name == "BODY" and attribute.section is not None:
        return _section(doc, attribute.section, attribute.partial, raw)
    return b"NIL"  # the grammar admits no other name


def _section(doc: dict, section: Section, partial: Optional[tuple[int, int]], raw: Optional[bytes]) -> bytes:
    """``BODY[section]<origin>`` data: the octets, sliced to ``<origin.length>`` (RFC 3501 §6.4.5)."""
    if raw is None:
        return EMPTY
    structure = doc.get("structure")
    opaque = isinstance(structure, dict) and bool(structure.get("opaque"))
    data = section_bytes(raw, section, leaf_root=opaque)
    if data is None:
        return EMPTY
    if partial is not None:
        origin, length = partial
        data = data[origin : origin + length]
    return literal(data) if data else EMPTY
