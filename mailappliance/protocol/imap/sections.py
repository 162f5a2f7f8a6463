"""Body sections located in a message's raw bytes (RFC 3501 §6.4.5).

Works on the stored bytes with offsets, never rewriting them: CRLF or bare LF line
ends, preambles, epilogues, a missing close boundary or a missing blank line after a
header are all served as they are. Each part's header block is parsed with the stdlib
(header only) to learn its Content-Type; multipart bodies are split by scanning for
boundary lines the way ``email.feedparser`` does, so part numbers agree with the
structure summarised at delivery (``services/mime.py``).

A part number that does not exist yields ``None``; :mod:`.fetch` sends it as the
empty string ``""`` (common practice; Dovecot sends NIL).
"""
from __future__ import annotations

import re
from email import policy
from email.message import Message
from email.parser import BytesParser
from typing import Iterable, Optional

from mailappliance.protocol.imap.types import Section

_HEADER_PARSER = BytesParser(policy=policy.compat32)
# email.feedparser's headerRE: a header line, an mbox "From " line or a continuation.
_HEADER_LINE = re.compile(rb"From |[\041-\071\073-\176]*:|[\t ]")
CRLF = b"\r\n"


class Entity:
    """One MIME entity: a header block and a body, as offsets into the raw bytes.

    ``header`` includes the blank line that ends it (when there is one); ``body`` is
    everything after, up to the line end before the next boundary of the enclosing
    multipart (RFC 2046 §5.1.1: that line end belongs to the boundary).
    """

    __slots__ = ("data", "start", "body_start", "end", "default_type", "_message", "_parts")

    def __init__(self, data: bytes, start: int, end: int, default_type: str = "text/plain") -> None:
        self.data = data
        self.start = start
        self.end = end
        self.body_start = _header_end(data, start, end)
        self.default_type = default_type
        self._message: Optional[Message] = None
        self._parts: Optional[list[Entity]] = None

    @property
    def header(self) -> bytes:
        return self.data[self.start : self.body_start]

    @property
    def body(self) -> bytes:
        return self.data[self.body_start : self.end]

    @property
    def headers(self) -> Message:
        """The header block parsed by the stdlib (lenient compat32), on first use."""
        if self._message is None:
            self._message = _HEADER_PARSER.parsebytes(self.header, headersonly=True)
            self._message.set_default_type(self.default_type)
        return self._message

    @property
    def content_type(self) -> str:
        """``type/subtype`` in lower case; ``default_type`` when absent, text/plain when invalid."""
        return self.headers.get_content_type()

    def parts(self) -> list["Entity"]:
        """The body parts of a multipart entity; empty when it is not one or has no boundary."""
        if self._parts is None:
            self._parts = []
            if self.content_type.startswith("multipart/"):
                boundary = self.headers.get_boundary()
                if boundary is not None:
                    child_default = "message/rfc822" if self.content_type == "multipart/digest" else "text/plain"
                    self._parts = [
                        Entity(self.data, a, b, child_default)
                        for a, b in _split_multipart(self.data, self.body_start, self.end, boundary)
                    ]
        return self._parts

    def is_multipart(self) -> bool:
        return bool(self.parts())

    def is_rfc822(self) -> bool:
        return self.content_type == "message/rfc822"

    def encapsulated(self) -> "Entity":
        """The message inside a message/rfc822 entity (its body, parsed as a message)."""
        return Entity(self.data, self.body_start, self.end)


def _header_end(data: bytes, start: int, end: int) -> int:
    """Offset just past the header block: after its blank line, or at the first line
    that is not a header line (a malformed header with no blank line), or at ``end``."""
    pos = start
    while pos < end:
        nl = data.find(b"\n", pos, end)
        line_end = end if nl < 0 else nl + 1
        line = data[pos:line_end]
        if line in (b"\r\n", b"\n"):
            return line_end
        if not _HEADER_LINE.match(line):
            return pos
        pos = line_end
    return end


def _split_multipart(data: bytes, start: int, end: int, boundary: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each body part between ``--boundary`` lines (RFC 2046 §5.1.1).

    As in ``email.feedparser``, so that sizes agree with the stored structure: a
    delimiter line may carry trailing blanks; the line end before it belongs to it;
    the preamble and the epilogue are skipped; delimiter lines right after a
    delimiter are swallowed (no empty parts between them); a close delimiter before
    any part means there are none; and with no close delimiter the last part runs to
    the end, less a final line end when that end is the end of the message.
    """
    marker = re.compile(
        rb"^--" + re.escape(boundary.encode("utf-8", "surrogateescape")) + rb"(--)?[ \t]*(?:\r?\n|\r?$)",
        re.MULTILINE,
    )
    spans: list[tuple[int, int]] = []
    part_start: Optional[int] = None
    for match in marker.finditer(data, start, end):
        if match.start() != start and data[match.start() - 1 : match.start()] != b"\n":
            continue  # ``^`` also matches at the scan start; a delimiter must begin a line
        if part_start is not None and match.start() == part_start:
            part_start = match.end()  # a delimiter right after a delimiter is swallowed
            continue
        if part_start is not None:
            spans.append((part_start, _strip_line_end(data, part_start, match.start())))
        if match.group(1):
            return spans
        part_start = match.end()
    if part_start is not None:
        spans.append((part_start, _strip_line_end(data, part_start, end) if end == len(data) else end))
    return spans


def _strip_line_end(data: bytes, start: int, pos: int) -> int:
    """``pos`` moved back over the one line end that precedes a delimiter line."""
    if pos > start and data[pos - 1 : pos] == b"\n":
        pos -= 1
        if pos > start and data[pos - 1 : pos] == b"\r":
            pos -= 1
    return pos


def locate(raw: bytes, part: tuple[int, ...], leaf_root: bool = False) -> Optional[Entity]:
    """The entity a part number names (RFC 3501 §6.4.5), or ``None`` if there is none.

    Part 1 of a non-multipart message is the message itself (its body is the part);
    after a message/rfc822 part, numbers refer to the encapsulated message's parts.
    ``leaf_root`` treats the whole message as one part (stored as opaque).
    """
    entity = Entity(raw, 0, len(raw))
    if leaf_root:
        return entity if part == (1,) else None
    is_message = True
    for depth, number in enumerate(part):
        if entity.is_multipart():
            parts = entity.parts()
            if not 1 <= number <= len(parts):
                return None
            entity = parts[number - 1]
        elif not (is_message and number == 1):
            return None
        is_message = False
        if depth + 1 < len(part) and entity.is_rfc822():
            entity = entity.encapsulated()
            is_message = True
    return entity


def section_bytes(raw: bytes, section: Section, leaf_root: bool = False) -> Optional[bytes]:
    """The octets of ``BODY[section]`` (RFC 3501 §6.4.5), or ``None`` if the part does not exist.

    With a part number, HEADER, HEADER.FIELDS(.NOT) and TEXT refer to the message
    inside a message/rfc822 part (``None`` for any other part); MIME is the part's
    own header. HEADER.FIELDS keeps the original, folded lines.
    """
    if not section.part:
        if section.text is None:
            return raw
        target: Optional[Entity] = Entity(raw, 0, len(raw))
    else:
        entity = locate(raw, section.part, leaf_root)
        if entity is None:
            return None
        if section.text is None:
            return entity.body
        if section.text == "MIME":
            return entity.header
        target = entity.encapsulated() if entity.is_rfc822() and not leaf_root else None
    if target is None:
        return None
    if section.text == "TEXT":
        return target.body
    if section.text == "HEADER":
        return target.header
    if section.text in ("HEADER.FIELDS", "HEADER.FIELDS.NOT"):
        return header_fields(target.header, section.fields, exclude=section.text == "HEADER.FIELDS.NOT")
    return None


def header_fields(header: bytes, names: Iterable[str], exclude: bool = False) -> bytes:
    """The header fields named (or, with ``exclude``, not named) in ``names``, in message
    order and as written (folded lines kept), then a blank line (RFC 3501 §6.4.5)."""
    wanted = {n.upper().encode("ascii", "replace") for n in names}
    out = []
    for field in _fields(header):
        colon = field.find(b":")
        if colon < 0:
            continue  # an mbox "From " line is no header field
        if (field[:colon].strip().upper() in wanted) != exclude:
            out.append(field if field.endswith(b"\n") else field + CRLF)
    out.append(CRLF)
    return b"".join(out)


def _fields(header: bytes) -> list[bytes]:
    """A header block's fields, each with its continuation lines; the blank line dropped."""
    fields: list[bytes] = []
    for line in _lines(header):
        if line in (b"\r\n", b"\n"):
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += line
        else:
            fields.append(line)
    return fields


def _lines(data: bytes) -> list[bytes]:
    """Lines split after each LF only (a lone CR is data here), line ends kept."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def count_lines(body: bytes) -> int:
    """Lines in a body, counted as ``services/mime.py`` does: line ends, plus an unended last line."""
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)
