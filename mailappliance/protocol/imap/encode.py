"""Encoding values into IMAP response syntax (RFC 3501 §4, §9).

Everything returns bytes ready to be joined into a response line. Strings are
quoted when they can be, sent as literals when they cannot (CR, LF, NUL, 8-bit,
or too long), and ``None`` is ``NIL``.
"""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Iterable, Optional, Union

MAX_QUOTED = 1024  # longer strings go as literals: easier on clients' line limits
_ATOM = re.compile(rb"^[!#$&'+,\-./0-9:;<=>?@A-Z^_`a-z|}~\[\]]+$")  # ATOM-CHAR plus ']' (astring)
_QUOTABLE = re.compile(rb"^[\x01-\x09\x0b\x0c\x0e-\x7f]*$")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

Text = Union[str, bytes]


def _bytes(value: Text) -> bytes:
    return value.encode("utf-8", "surrogateescape") if isinstance(value, str) else value


def literal(value: Text) -> bytes:
    """``{n}\\r\\n`` followed by the octets (RFC 3501 §4.3)."""
    data = _bytes(value)
    return b"{%d}\r\n%s" % (len(data), data)


def string(value: Text) -> bytes:
    """A quoted string, or a literal when quoting cannot carry the value."""
    data = _bytes(value)
    if len(data) <= MAX_QUOTED and _QUOTABLE.match(data):
        return b'"' + data.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'
    return literal(data)


def nstring(value: Optional[Text]) -> bytes:
    return b"NIL" if value is None else string(value)


def astring(value: Text) -> bytes:
    """An atom when the value is one, otherwise a string (RFC 3501 §9 ``astring``)."""
    data = _bytes(value)
    if data and data.upper() != b"NIL" and _ATOM.match(data):
        return data
    return string(data)


def number_list(values: Iterable[int]) -> bytes:
    return b" ".join(b"%d" % v for v in values)


def flag_list(flags: Iterable[str]) -> bytes:
    """``(\\Seen $Label1)``: flags are atoms, checked by the parser on the way in."""
    return b"(" + b" ".join(_bytes(f) for f in flags) + b")"


def date_time(value: datetime) -> bytes:
    """INTERNALDATE as ``"dd-Mon-yyyy hh:mm:ss +zzzz"`` (RFC 3501 §9 ``date-time``)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    offset = value.utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    minutes = abs(minutes)
    text = "%2d-%s-%04d %02d:%02d:%02d %s%02d%02d" % (
        value.day, _MONTHS[value.month - 1], value.year, value.hour, value.minute, value.second,
        sign, minutes // 60, minutes % 60,
    )
    return b'"' + text.encode() + b'"'
