"""Byte-stream framing for line protocols: command lines and the DATA body.

Pure code: bytes are fed in, lines and messages come out. The gevent glue owns the
socket; these classes own the rules (RFC 5321 §2.3.8 line endings, §4.5.2 dot
transparency, §4.5.3.1 lengths).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Union


class LineTooLong(Exception):
    """A command line exceeded the limit; its bytes were discarded up to the next LF."""


class LineBuffer:
    """Splits a byte stream into CRLF (or LF) terminated command lines.

    ``next_line(limit)`` returns a line without its ending, ``None`` when no complete
    line is buffered, or raises :class:`LineTooLong` once the over-long line has been
    consumed, so the caller can answer it and carry on with the next command.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> None:
        self._buf += data

    def __len__(self) -> int:
        return len(self._buf)

    def take_all(self) -> bytes:
        """Remove and return everything buffered (used when DATA starts)."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    def clear(self) -> None:
        """Drop buffered input: after STARTTLS nothing sent in clear may be used (RFC 3207 §4.2)."""
        self._buf.clear()
        self._discarding = False

    def next_line(self, limit: int) -> Optional[bytes]:
        end = self._buf.find(b"\n")
        if self._discarding:
            if end < 0:
                self._buf.clear()
                return None
            del self._buf[: end + 1]
            self._discarding = False
            raise LineTooLong()
        if end < 0:
            if len(self._buf) > limit:
                self._buf.clear()
                self._discarding = True
            return None
        if end + 1 > limit:
            del self._buf[: end + 1]
            raise LineTooLong()
        line = bytes(self._buf[:end])
        del self._buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line


class DataError:
    """Why a DATA body was refused after it was read to its end."""

    TOO_BIG = "too-big"
    BARE_LINE_ENDING = "bare-line-ending"
    LINE_TOO_LONG = "line-too-long"


@dataclass(frozen=True)
class DataResult:
    message: Optional[bytes]  # unstuffed message; None when refused
    error: Optional[str]  # a DataError constant
    size: int  # octets received before unstuffing (approximate when too big)


_END = b"\r\n.\r\n"


class DataReader:
    """Collects a DATA body up to ``<CRLF>.<CRLF>`` (RFC 5321 §4.1.1.4).

    Only CRLF.CRLF ends the data. A bare LF or lone CR anywhere is refused the
    moment it arrives (the result is ready at once, with ``BARE_LINE_ENDING``); the
    caller then answers and disconnects, as Postfix does with
    ``smtpd_forbid_bare_newline``, so neither ``<LF>.<LF>``-style "ends" nor the
    commands smuggled after them are ever read (the SMTP-smuggling attacks), and a
    client that sends bare LF is told so instead of waiting for a timeout. Bodies
    over ``max_size`` are discarded while reading (only a short tail is kept to find
    the end), so a huge message costs no memory.
    """

    def __init__(self, max_size: int, max_line: int = 1000) -> None:
        self._max_size = max_size
        self._max_line = max_line
        # A virtual CRLF before the body lets one search find a terminator on the
        # first line and lets dot-unstuffing treat every line alike.
        self._buf = bytearray(b"\r\n")
        self._received = 0
        self._too_big = False
        self.result: Optional[DataResult] = None
        self.leftover = b""

    @property
    def done(self) -> bool:
        return self.result is not None

    def feed(self, data: Union[bytes, bytearray]) -> bool:
        """Feed bytes; returns True once the end of data was found."""
        if self.result is not None:
            self.leftover += bytes(data)
            return True
        start = max(0, len(self._buf) - 4)
        # Check the new bytes, plus a CR left at the end by the last feed (its LF may be here).
        checked_from = len(self._buf) - 1 if self._buf.endswith(b"\r") else len(self._buf)
        self._buf += data
        self._received += len(data)
        end = self._buf.find(_END, start)
        # Only the data counts: bytes after the terminator are the next commands.
        if _has_bare_line_ending(self._buf, checked_from, end + 5 if end >= 0 else len(self._buf)):
            self.result = DataResult(None, DataError.BARE_LINE_ENDING, self._received)
            self._buf = bytearray()
            return True
        if end < 0:
            if not self._too_big and len(self._buf) - 2 > self._max_size + 5:
                self._too_big = True
            if self._too_big:
                # keep just enough to recognise a terminator split across feeds
                del self._buf[:-4]
            return False
        self.leftover = bytes(self._buf[end + 5 :])
        received = self._received - len(self.leftover)
        body, self._buf = self._buf, bytearray()
        del body[end + 2 :]  # keep the virtual CRLF and the last line's CRLF
        self.result = self._finish(body, received)
        return True

    def _finish(self, body: bytearray, received: int) -> DataResult:
        """Unstuff in place (at most one extra copy: a 10 MB body never costs 50 MB)."""
        if self._too_big:
            return DataResult(None, DataError.TOO_BIG, received)
        # Line endings were checked as the bytes arrived (feed).
        if body.find(b"\r\n.") >= 0:
            body = body.replace(b"\r\n.", b"\r\n")  # §4.5.2: drop a line's leading period
        del body[:2]
        if len(body) > self._max_size:
            return DataResult(None, DataError.TOO_BIG, received)
        message = bytes(body)
        del body
        if len(message) > self._max_line and _longest_line(message) > self._max_line:
            return DataResult(None, DataError.LINE_TOO_LONG, received)
        return DataResult(message, None, received)


def _has_bare_line_ending(buf: bytearray, start: int, stop: int) -> bool:
    """A LF not after CR, or a CR not before LF, in ``buf[start:stop]``.

    ``start`` is never inside a CRLF. A CR as the very last byte of the buffer may
    still be followed by LF in the next feed, so it is left for then.
    """
    if stop == len(buf) and buf.endswith(b"\r"):
        stop -= 1
    region = bytes(memoryview(buf)[start:stop])
    crlf = region.count(b"\r\n")
    return region.count(b"\n") != crlf or region.count(b"\r") != crlf


def _longest_line(message: bytes) -> int:
    """Length of the longest line counting its CRLF (RFC 5321 §4.5.3.1.6)."""
    longest = 0
    start = 0
    find = message.find
    while True:
        end = find(b"\r\n", start)
        if end < 0:
            return max(longest, len(message) - start)
        if end - start + 2 > longest:
            longest = end - start + 2
        start = end + 2
