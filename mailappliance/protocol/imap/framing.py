"""Assembling IMAP commands and their literals from a byte stream (RFC 3501 §4.3, §7.5; RFC 7888).

Pure code: :meth:`CommandFramer.feed` takes bytes as they arrive and
:meth:`CommandFramer.next_event` hands out what they mean, one event at a time:

* :class:`CommandBytes`: one complete command, literals inline exactly as
  received (``a LOGIN {4}\\r\\nuser pass``), without its final line ending;
* :class:`NeedContinuation`: a synchronising literal ``{n}`` was accepted; the
  server must send ``+ Ready`` before the client sends its octets;
* :class:`Rejected`: a line, literal or whole command over its limit. An
  over-long line is discarded up to its end. A refused ``{n}`` is never sent by
  the client (it waits for ``+``), so framing resumes with the next line. A
  refused ``{n+}`` (LITERAL+) arrives anyway: its octets and the rest of the
  command are discarded, including any further ``{n+}`` literals announced at
  the end of the discarded lines, so none of their bytes is read as a command.

Line endings: CRLF, or a bare LF (some scripts and test tools send those); the
CR before LF is dropped. A bare CR is not a line ending; the grammar rejects it.

:meth:`CommandFramer.next_line` reads one plain line with no literal processing:
AUTHENTICATE answers (RFC 3501 §6.2.2) and IDLE's ``DONE`` (RFC 2177).

Memory stays bounded: a line is at most ``max_line`` octets, a literal at most
``max_literal``, a whole command (lines and literals) at most ``max_command``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

MAX_LITERAL_DIGITS = 12  # longer sizes than this are refused as too large without int()
DEFAULT_COMMAND_LINES = 2  # max_command default: max_literal plus this many max_line

REASON_LINE = "Command line too long"
REASON_LITERAL = "Literal too large"
REASON_COMMAND = "Command too large"

_LITERAL_AT_END = re.compile(rb"\{([0-9]+)(\+?)\}\r?$")
_TAG = re.compile(rb"[!#$&',\-./0-9:;<=>?@A-Z^_`a-z|}~\[\]]+")  # ASTRING-CHAR except "+" (RFC 3501 §9)
_TAIL = 32  # bytes of a discarded line kept to see a literal announced at its end


@dataclass(frozen=True)
class CommandBytes:
    data: bytes


@dataclass(frozen=True)
class NeedContinuation:
    size: int


@dataclass(frozen=True)
class Rejected:
    tag: Optional[str]
    reason: str


Event = Union[CommandBytes, NeedContinuation, Rejected]

# modes
_LINE = "line"  # collecting a command line
_LITERAL = "literal"  # collecting literal octets into the command
_SKIP = "skip"  # discarding the octets of a refused non-synchronising literal
_DISCARD = "discard"  # discarding the rest of a command line (then maybe a literal)
_DISCARD_RAW = "discard-raw"  # discarding the rest of an over-long plain line


def tag_of(line: bytes) -> Optional[str]:
    """The command's tag when its first token is a valid one (RFC 3501 §9 ``tag``)."""
    match = _TAG.match(line)
    if match is None:
        return None
    end = match.end()
    if end < len(line) and line[end : end + 1] not in (b" ", b"\r", b"\n"):
        return None
    return match.group().decode("ascii")


def literal_at_end(line: bytes) -> Optional[tuple[int, bool]]:
    """``(size, synchronising)`` when ``line`` (without LF) ends with ``{n}`` or ``{n+}``.

    An absurd size comes back as ``-1`` (always too large).
    """
    match = _LITERAL_AT_END.search(line)
    if match is None:
        return None
    digits = match.group(1)
    size = int(digits) if len(digits) <= MAX_LITERAL_DIGITS else -1
    return size, not match.group(2)


class CommandFramer:
    """One IMAP command at a time, literals included (see the module docstring)."""

    def __init__(self, max_line: int, max_literal: int, max_command: Optional[int] = None) -> None:
        self.max_line = max_line
        self.max_literal = max_literal
        self.max_command = max_command if max_command is not None else max_literal + DEFAULT_COMMAND_LINES * max_line
        self._buf = bytearray()
        self._scan = 0  # no LF in _buf[:_scan]
        self._mode = _LINE
        self._parts: list[bytes] = []
        self._size = 0
        self._left = 0  # literal octets still to collect or skip
        self._tail = b""

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets held: the unprocessed input plus the command being assembled."""
        return len(self._buf) + self._size

    # ------------------------------------------------------------------ commands
    def next_event(self) -> Optional[Event]:
        """The next event the buffered bytes make, or None until more arrive."""
        while self._buf:
            mode = self._mode
            if mode == _LINE:
                event = self._take_line()
                if event is not None or self._mode == _LINE:
                    return event
            elif mode == _LITERAL:
                take = min(self._left, len(self._buf))
                self._parts.append(bytes(self._buf[:take]))
                del self._buf[:take]
                self._left -= take
                if self._left:
                    return None
                self._mode = _LINE
            elif mode == _SKIP:
                take = min(self._left, len(self._buf))
                del self._buf[:take]
                self._left -= take
                if self._left:
                    return None
                self._mode, self._tail = _DISCARD, b""
            else:
                self._discard_line(raw=mode == _DISCARD_RAW)
        return None

    def _take_line(self) -> Optional[Event]:
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            if len(buf) > self.max_line + 1:  # + 1: a CR whose LF is still to come
                tag = self._tag(bytes(buf[: self.max_line]))
                self._tail = bytes(buf[-_TAIL:])
                buf.clear()
                self._scan = 0
                self._reset(_DISCARD)
                return Rejected(tag, REASON_LINE)
            self._scan = len(buf)
            return None
        self._scan = 0
        stop = end - 1 if end and buf[end - 1] == 0x0D else end
        if stop > self.max_line:
            tag = self._tag(bytes(buf[: self.max_line]))
            tail = bytes(buf[max(0, end - _TAIL) : end])
            del buf[: end + 1]
            self._reset(_LINE)
            self._after_discarded(tail)
            return Rejected(tag, REASON_LINE)
        line = bytes(buf[: end + 1])
        del buf[: end + 1]
        self._size += len(line)
        literal = literal_at_end(line[:-1])
        if self._size > self.max_command:
            tag = self._tag(line)
            self._reset(_LINE)
            self._after_discarded(line[:-1])
            return Rejected(tag, REASON_COMMAND)
        if literal is None:
            self._parts.append(line[:stop])
            data = b"".join(self._parts)
            self._reset(_LINE)
            return CommandBytes(data)
        self._parts.append(line)
        size, sync = literal
        if size < 0 or size > self.max_literal or self._size + size > self.max_command:
            tag = self._tag(line)
            reason = REASON_COMMAND if 0 <= size <= self.max_literal else REASON_LITERAL
            self._reset(_LINE)
            if not sync:
                self._skip(size)
            return Rejected(tag, reason)
        self._size += size
        self._left = size
        self._mode = _LITERAL
        return NeedContinuation(size) if sync else None

    def _discard_line(self, raw: bool) -> None:
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            self._tail = (self._tail + bytes(buf[-_TAIL:]))[-_TAIL:]
            buf.clear()
            return
        tail = (self._tail + bytes(buf[max(0, end - _TAIL) : end]))[-_TAIL:]
        del buf[: end + 1]
        self._mode, self._tail = _LINE, b""
        if not raw:
            self._after_discarded(tail)

    def _after_discarded(self, tail: bytes) -> None:
        """A discarded line that announced ``{n+}``: its octets arrive anyway, skip them too."""
        literal = literal_at_end(tail)
        if literal is not None and not literal[1]:
            self._skip(literal[0])

    def _skip(self, size: int) -> None:
        self._mode = _SKIP
        self._left = size if size >= 0 else 1 << 62

    def _tag(self, line: bytes) -> Optional[str]:
        return tag_of(self._parts[0] if self._parts else line)

    def _reset(self, mode: str) -> None:
        self._parts = []
        self._size = 0
        self._left = 0
        self._mode = mode

    # ------------------------------------------------------------------ plain lines
    def next_line(self) -> Optional[bytes]:
        """One plain line without its ending (no literals), or None until it is complete.

        Only between commands. An over-long line is cut at ``max_line`` octets and
        the rest of it is discarded, so the caller sees something malformed.
        """
        if self._parts or self._mode not in (_LINE, _DISCARD_RAW):
            raise RuntimeError("next_line() while a command is being assembled")
        if self._mode == _DISCARD_RAW:
            self._discard_line(raw=True)
            if self._mode == _DISCARD_RAW:
                return None
        buf = self._buf
        end = buf.find(b"\n", self._scan)
        if end < 0:
            if len(buf) > self.max_line + 1:
                line = bytes(buf[: self.max_line])
                buf.clear()
                self._scan = 0
                self._mode = _DISCARD_RAW
                return line
            self._scan = len(buf)
            return None
        self._scan = 0
        line = bytes(buf[:end])
        del buf[: end + 1]
        if line.endswith(b"\r"):
            line = line[:-1]
        return line[: self.max_line]
