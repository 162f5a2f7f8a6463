"""Modified UTF-7 for folder names (RFC 3501 §5.1.3).

Printable US-ASCII other than ``&`` stands for itself, ``&`` is ``&-``, and any
other run of characters is ``&`` + modified base64 (``,`` for ``/``, no padding)
of its UTF-16BE form + ``-``.

Decoding is strict where a name would be ambiguous (an unterminated ``&...``,
characters outside the base64 alphabet, an odd number of octets, broken
surrogate pairs) and lenient about forms a careful encoder would not produce
(printable ASCII inside a base64 run, two adjacent runs, non-zero padding bits,
raw non-ASCII characters outside a run, as sent by clients that assume UTF-8).
"""
from __future__ import annotations

import binascii
import re

_RUN = re.compile(r"&([^-]*)-")
_B64 = re.compile(r"^[A-Za-z0-9+,]*$")


def encode(name: str) -> str:
    """``"Entwürfe"`` -> ``"Entw&APw-rfe"``; ``"A&B"`` -> ``"A&-B"``."""
    out: list[str] = []
    pending: list[str] = []

    def flush() -> None:
        if pending:
            raw = "".join(pending).encode("utf-16-be", "surrogatepass")
            text = binascii.b2a_base64(raw, newline=False).decode("ascii").rstrip("=")
            out.append("&" + text.replace("/", ",") + "-")
            pending.clear()

    for char in name:
        if 0x20 <= ord(char) <= 0x7E:
            flush()
            out.append("&-" if char == "&" else char)
        else:
            pending.append(char)
    flush()
    return "".join(out)


def decode(name: str) -> str:
    """The folder name that ``name`` encodes; ValueError when it is not valid modified UTF-7."""
    if "&" not in name:
        return name
    out: list[str] = []
    pos = 0
    while True:
        amp = name.find("&", pos)
        if amp < 0:
            out.append(name[pos:])
            return "".join(out)
        out.append(name[pos:amp])
        match = _RUN.match(name, amp)
        if match is None:
            raise ValueError("unterminated '&' sequence in folder name")
        body = match.group(1)
        out.append("&" if body == "" else _decode_run(body))
        pos = match.end()


def _decode_run(body: str) -> str:
    if not _B64.match(body):
        raise ValueError("invalid character in modified base64")
    if len(body) % 4 == 1:
        raise ValueError("truncated modified base64")
    padded = body.replace(",", "/") + "=" * (-len(body) % 4)
    raw = binascii.a2b_base64(padded.encode("ascii"))
    if len(raw) % 2:
        raise ValueError("modified base64 does not hold UTF-16")
    try:
        return raw.decode("utf-16-be")
    except UnicodeDecodeError as exc:
        raise ValueError("invalid UTF-16 in folder name") from exc
