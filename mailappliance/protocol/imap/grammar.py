"""IMAP4rev1 grammar primitives (RFC 3501 §9), pure and position based.

Every element is ``parse_x(buf, pos) -> (value, new_pos)``: ``buf`` is one whole
command as the framer produced it (literals inline, ``{n}`` or ``{n+}`` then
CRLF or LF then the octets) and ``pos`` where the element starts. Malformed
input raises :class:`ParseError` (without a tag; :func:`parse_command` adds it).

Strings come back as the exact octets (``bytes``); :func:`text` turns them into
``str``. Folder names come back decoded (INBOX canonicalised, then modified
UTF-7, RFC 3501 §5.1). Per-command parsing is in :mod:`.commands`, search keys
in :mod:`.searchkeys`; :func:`parse_command` is re-exported here.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from typing import Optional

from mailappliance.protocol.imap import utf7
from mailappliance.protocol.imap.types import Command, ParseError, SequenceSet

MAX_NUMBER = 0xFFFFFFFF  # RFC 3501 §9 number: unsigned 32-bit
MAX_MODSEQ = (1 << 63) - 1  # RFC 7162 §7 mod-sequence-value: unsigned 63-bit
MAX_SEQUENCE_RANGES = 20_000  # ranges in one sequence-set (a 64 KiB line holds ~30k)

_ATOM = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[^_`a-z|}~]+")  # ATOM-CHAR
_ASTRING_CHARS = re.compile(rb"[!#$&'+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+")  # ASTRING-CHAR
_LIST_CHARS = re.compile(rb"[!#$%&'*+,\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+")  # list-char
_TAG = re.compile(rb"[!#$&',\-./0-9:;<=>?@A-Z\[\]^_`a-z|}~]+")  # ASTRING-CHAR except "+"
_DIGITS = re.compile(rb"[0-9]+")
_QUOTED = re.compile(rb'"((?:[\x01-\x09\x0b\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]|\\["\\])*)"')
_UNESCAPE = re.compile(rb'\\(["\\])')
_LITERAL = re.compile(rb"\{([0-9]+)(\+?)\}\r?\n")
_SEQ_NUM = rb"(?:\*|[1-9][0-9]*)"
_SEQUENCE = re.compile(_SEQ_NUM + rb"(?::" + _SEQ_NUM + rb")?(?:," + _SEQ_NUM + rb"(?::" + _SEQ_NUM + rb")?)*")
_DATE = re.compile(rb"([0-9]{1,2})-([A-Za-z]{3})-([0-9]{4})")
_DATE_TIME = re.compile(
    rb'"([ 0-9]?[0-9])-([A-Za-z]{3})-([0-9]{4}) ([0-9]{2}):([0-9]{2}):([0-9]{2}) ([+-])([0-9]{2})([0-9]{2})"'
)
_MONTHS = {m: i for i, m in enumerate(
    (b"JAN", b"FEB", b"MAR", b"APR", b"MAY", b"JUN", b"JUL", b"AUG", b"SEP", b"OCT", b"NOV", b"DEC"), 1
)}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

SYSTEM_FLAGS = {
    f.upper(): f for f in ("\\Seen", "\\Answered", "\\Flagged", "\\Deleted", "\\Draft", "\\Recent")
}


# ---------------------------------------------------------------- small pieces


def text(value: bytes) -> str:
    """Octets as text: UTF-8, undecodable octets kept as surrogates (never fails)."""
    return value.decode("utf-8", "surrogateescape")


def at(buf: bytes, pos: int, char: bytes) -> bool:
    """Whether ``buf`` has the single octet ``char`` at ``pos``."""
    return buf[pos : pos + 1] == char


def expect(buf: bytes, pos: int, char: bytes, what: str = "") -> int:
    """Skip the exact octets ``char`` or fail."""
    if buf.startswith(char, pos):
        return pos + len(char)
    if pos >= len(buf):
        raise ParseError(f"missing {what or repr(char.decode())}: unexpected end of command")
    raise ParseError(f"expected {what or repr(char.decode())}")


def sp(buf: bytes, pos: int) -> int:
    """One SP (RFC 3501 §9 is strict: exactly one)."""
    return expect(buf, pos, b" ", "space")


def finish(buf: bytes, pos: int) -> None:
    """The command must end here."""
    if pos != len(buf):
        raise ParseError("unexpected extra arguments")


def parse_tag(buf: bytes, pos: int = 0) -> tuple[str, int]:
    match = _TAG.match(buf, pos)
    if match is None:
        raise ParseError("missing or invalid tag")
    return match.group().decode("ascii"), match.end()


def parse_atom(buf: bytes, pos: int) -> tuple[str, int]:
    match = _ATOM.match(buf, pos)
    if match is None:
        raise ParseError("expected an atom" if pos < len(buf) else "unexpected end of command")
    return match.group().decode("ascii"), match.end()


def parse_keyword(buf: bytes, pos: int) -> tuple[str, int]:
    """An atom upper-cased: command names and keywords are case-insensitive."""
    word, pos = parse_atom(buf, pos)
    return word.upper(), pos


def _digits(buf: bytes, pos: int, limit: int, what: str) -> tuple[int, int]:
    match = _DIGITS.match(buf, pos)
    if match is None:
        raise ParseError(f"expected {what}")
    digits = match.group()
    if len(digits) > 20 or int(digits) > limit:
        raise ParseError(f"{what} out of range")
    return int(digits), match.end()


def parse_number(buf: bytes, pos: int) -> tuple[int, int]:
    """RFC 3501 §9 ``number``: 0 to 4294967295."""
    return _digits(buf, pos, MAX_NUMBER, "number")


def parse_nz_number(buf: bytes, pos: int) -> tuple[int, int]:
    """RFC 3501 §9 ``nz-number``: 1 to 4294967295, no leading zero."""
    if at(buf, pos, b"0"):
        raise ParseError("expected a non-zero number")
    return _digits(buf, pos, MAX_NUMBER, "non-zero number")


def parse_modseq(buf: bytes, pos: int, zero_ok: bool = False) -> tuple[int, int]:
    """RFC 7162 §7 ``mod-sequence-value`` (``mod-sequence-valzer`` when ``zero_ok``)."""
    value, end = _digits(buf, pos, MAX_MODSEQ, "mod-sequence")
    if value == 0 and not zero_ok:
        raise ParseError("mod-sequence must be positive")
    return value, end


# ---------------------------------------------------------------- strings


def parse_quoted(buf: bytes, pos: int) -> tuple[bytes, int]:
    """``"..."`` with ``\\\\`` and ``\\"`` escapes; no CR, LF, NUL or 8-bit octets."""
    match = _QUOTED.match(buf, pos)
    if match is None:
        raise ParseError("malformed quoted string")
    value = match.group(1)
    if b"\\" in value:
        value = _UNESCAPE.sub(rb"\1", value)
    return value, match.end()


def parse_literal(buf: bytes, pos: int, binary: bool = False) -> tuple[bytes, int]:
    """``{n}`` or ``{n+}`` (RFC 7888), the line ending, then exactly n octets.

    NUL is not a CHAR8 (RFC 3501 §9); ``binary`` lets it through (APPEND bodies).
    """
    match = _LITERAL.match(buf, pos)
    if match is None:
        raise ParseError("malformed literal")
    digits = match.group(1)
    if len(digits) > 10 or int(digits) > MAX_NUMBER:
        raise ParseError("literal size out of range")
    start = match.end()
    end = start + int(digits)
    if end > len(buf):
        raise ParseError("literal shorter than announced")
    value = buf[start:end]
    if not binary and b"\x00" in value:
        raise ParseError("NUL in literal")
    return value, end


def parse_string(buf: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 3501 §9 ``string``: quoted or literal."""
    first = buf[pos : pos + 1]
    if first == b'"':
        return parse_quoted(buf, pos)
    if first == b"{":
        return parse_literal(buf, pos)
    raise ParseError("expected a string" if first else "unexpected end of command")


def parse_astring(buf: bytes, pos: int) -> tuple[bytes, int]:
    """RFC 3501 §9 ``astring``: 1*ASTRING-CHAR or a string."""
    match = _ASTRING_CHARS.match(buf, pos)
    if match is not None:
        return match.group(), match.end()
    return parse_string(buf, pos)


def parse_nstring(buf: bytes, pos: int) -> tuple[Optional[bytes], int]:
    """RFC 3501 §9 ``nstring``: a string or NIL."""
    if buf[pos : pos + 3].upper() == b"NIL" and not _ASTRING_CHARS.match(buf, pos + 3):
        return None, pos + 3
    return parse_string(buf, pos)


# ---------------------------------------------------------------- folder names


def folder_name(raw: bytes) -> str:
    """Octets of a mailbox name as the folder it names (RFC 3501 §5.1, §5.1.3).

    8-bit names are taken as UTF-8 (clients that never heard of modified UTF-7).
    """
    try:
        name = raw.decode("ascii") if raw.isascii() else raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("folder name is not valid UTF-8") from None
    if _CONTROL.search(name):
        raise ParseError("control character in folder name")
    if name.upper() == "INBOX":
        return "INBOX"
    try:
        return utf7.decode(name)
    except ValueError as exc:
        raise ParseError(f"invalid folder name: {exc}") from None


def parse_mailbox(buf: bytes, pos: int) -> tuple[str, int]:
    """RFC 3501 §9 ``mailbox``: an astring, decoded."""
    raw, pos = parse_astring(buf, pos)
    return folder_name(raw), pos


def parse_list_mailbox(buf: bytes, pos: int) -> tuple[str, int]:
    """RFC 3501 §9 ``list-mailbox``: 1*list-char (atom chars, ``%``, ``*``, ``]``) or a string.

    The wildcards survive decoding: modified base64 never contains them.
    """
    match = _LIST_CHARS.match(buf, pos)
    if match is not None:
        return folder_name(match.group()), match.end()
    raw, pos = parse_string(buf, pos)
    return folder_name(raw), pos


# ---------------------------------------------------------------- sequence sets


def parse_sequence_set(buf: bytes, pos: int) -> tuple[SequenceSet, int]:
    """RFC 3501 §9 ``sequence-set``: ``1,3:5,7:*``; ``$`` (RFC 5182) is not supported."""
    match = _SEQUENCE.match(buf, pos)
    if match is None:
        raise ParseError("expected a sequence set")
    end = match.end()
    if end < len(buf) and buf[end] in b"0123456789:,$*":
        raise ParseError("malformed sequence set")
    whole = match.group()
    if whole.count(b",") >= MAX_SEQUENCE_RANGES:
        raise ParseError("too many ranges in sequence set")
    ranges = []
    for item in whole.split(b","):
        first, _, last = item.partition(b":")
        low = _seq_number(first)
        ranges.append((low, _seq_number(last) if last else low))
    return SequenceSet(tuple(ranges)), end


def _seq_number(digits: bytes) -> Optional[int]:
    if digits == b"*":
        return None
    if len(digits) > 10 or int(digits) > MAX_NUMBER:
        raise ParseError("number in sequence set out of range")
    return int(digits)


# ---------------------------------------------------------------- flags


def parse_flag(buf: bytes, pos: int, settable: bool = False) -> tuple[str, int]:
    """RFC 3501 §9 ``flag``: a system flag (canonical spelling) or a keyword atom.

    ``settable`` (STORE, APPEND): ``\\Recent`` and unknown ``\\`` flags are refused.
    """
    if at(buf, pos, b"\\"):
        word, end = parse_atom(buf, pos + 1)
        flag = SYSTEM_FLAGS.get("\\" + word.upper())
        if flag is None or (settable and flag == "\\Recent"):
            raise ParseError(f"flag \\{word} cannot be used here" if settable else f"unknown flag \\{word}")
        return flag, end
    return parse_atom(buf, pos)


def parse_flag_list(buf: bytes, pos: int, settable: bool = True) -> tuple[tuple[str, ...], int]:
    """``(flag flag ...)``, possibly empty; repeats dropped."""
    pos = expect(buf, pos, b"(")
    flags: list[str] = []
    while not at(buf, pos, b")"):
        if flags:
            pos = sp(buf, pos)
        flag, pos = parse_flag(buf, pos, settable)
        if flag not in flags:
            flags.append(flag)
    return tuple(flags), pos + 1


# ---------------------------------------------------------------- dates


def _month(name: bytes) -> int:
    month = _MONTHS.get(name.upper())
    if month is None:
        raise ParseError("invalid month")
    return month


def parse_date(buf: bytes, pos: int) -> tuple[date, int]:
    """RFC 3501 §9 ``date``: ``d-Mon-yyyy`` or ``dd-Mon-yyyy``, optionally quoted."""
    quoted = at(buf, pos, b'"')
    match = _DATE.match(buf, pos + quoted)
    if match is None:
        raise ParseError("expected a date like 1-Feb-2024")
    end = match.end()
    if quoted:
        end = expect(buf, end, b'"')
    elif _ATOM.match(buf, end):
        raise ParseError("malformed date")
    try:
        value = date(int(match.group(3)), _month(match.group(2)), int(match.group(1)))
    except ValueError:
        raise ParseError("invalid date") from None
    return value, end


def parse_date_time(buf: bytes, pos: int) -> tuple[datetime, int]:
    """RFC 3501 §9 ``date-time``: ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` as an aware datetime."""
    match = _DATE_TIME.match(buf, pos)
    if match is None:
        raise ParseError('expected a date-time like "01-Feb-2024 12:00:00 +0000"')
    day, month, year, hour, minute, second, sign, zh, zm = match.groups()
    offset = timedelta(hours=int(zh), minutes=int(zm))
    if int(zm) >= 60 or offset >= timedelta(hours=24):
        raise ParseError("invalid time zone")
    try:
        value = datetime(
            int(year), _month(month), int(day), int(hour), int(minute), int(second),
            tzinfo=timezone(-offset if sign == b"-" else offset),
        )
    except ValueError:
        raise ParseError("invalid date-time") from None
    return value, match.end()


def parse_command(data: bytes) -> Command:
    """One complete command as the framer produced it -> :class:`Command` (see :mod:`.commands`)."""
    from mailappliance.protocol.imap.commands import parse_command as parse  # commands builds on this module

    return parse(data)

__all__ = [
    "parse_command", "parse_tag", "parse_atom", "parse_keyword", "parse_number", "parse_nz_number",
    "parse_modseq", "parse_quoted", "parse_literal", "parse_string", "parse_astring", "parse_nstring",
    "parse_mailbox", "parse_list_mailbox", "parse_sequence_set", "parse_flag", "parse_flag_list",
    "parse_date", "parse_date_time", "folder_name", "text", "MAX_NUMBER", "MAX_MODSEQ",
    "MAX_SEQUENCE_RANGES",
]
