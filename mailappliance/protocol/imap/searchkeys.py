"""Search keys (RFC 3501 §6.4.4, RFC 7162 §3.1.5 MODSEQ), parsed into :class:`SearchKey`.

Meaning lives elsewhere (services/imap/search.py); this is only the grammar.
String arguments are decoded with the command's charset: UTF-8 strictly,
US-ASCII (or none given) leniently as UTF-8, any other charset as Latin-1 so the
command still parses and the session can answer ``NO [BADCHARSET]``.
"""
from __future__ import annotations

from typing import Callable, Optional

from mailappliance.protocol.imap.grammar import (
    at, parse_astring, parse_date, parse_flag, parse_keyword, parse_modseq, parse_number,
    parse_quoted, parse_sequence_set, sp, text,
)
from mailappliance.protocol.imap.types import ParseError, SearchKey

MAX_SEARCH_DEPTH = 100  # nested NOT / OR / parentheses

NO_ARGUMENT = frozenset({
    "ALL", "ANSWERED", "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN",
    "UNANSWERED", "UNDELETED", "UNDRAFT", "UNFLAGGED", "UNSEEN",
})
STRING_ARGUMENT = frozenset({"BCC", "BODY", "CC", "FROM", "SUBJECT", "TEXT", "TO"})
DATE_ARGUMENT = frozenset({"BEFORE", "ON", "SINCE", "SENTBEFORE", "SENTON", "SENTSINCE"})
NUMBER_ARGUMENT = frozenset({"LARGER", "SMALLER"})
FLAG_ARGUMENT = frozenset({"KEYWORD", "UNKEYWORD"})
MODSEQ_ENTRY_TYPES = frozenset({"PRIV", "SHARED", "ALL"})

Decoder = Callable[[bytes], str]


def decoder(charset: Optional[str]) -> Decoder:
    """How string arguments are turned into text for ``CHARSET charset``."""
    name = (charset or "US-ASCII").upper()
    if name == "UTF-8":
        def utf8(value: bytes) -> str:
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise ParseError("search string is not valid UTF-8") from None
        return utf8
    if name == "US-ASCII":
        return text
    return lambda value: value.decode("latin-1")


def parse_search_program(buf: bytes, pos: int, charset: Optional[str]) -> tuple[SearchKey, int]:
    """``search-key *(SP search-key)`` as ``SearchKey("AND", children=...)``; ``pos`` is at the first key."""
    decode = decoder(charset)
    keys = []
    while True:
        key, pos = parse_search_key(buf, pos, decode)
        keys.append(key)
        if not at(buf, pos, b" "):
            return SearchKey("AND", children=tuple(keys)), pos
        pos += 1


def parse_search_key(buf: bytes, pos: int, decode: Decoder = text, depth: int = 0) -> tuple[SearchKey, int]:
    """One ``search-key`` (RFC 3501 §9), including ``(key key ...)`` and a bare sequence set."""
    if depth >= MAX_SEARCH_DEPTH:
        raise ParseError("search keys nested too deeply")
    first = buf[pos : pos + 1]
    if first == b"(":
        pos += 1
        children = []
        while True:
            key, pos = parse_search_key(buf, pos, decode, depth + 1)
            children.append(key)
            if at(buf, pos, b")"):
                return SearchKey("AND", children=tuple(children)), pos + 1
            if pos >= len(buf):
                raise ParseError("missing ')' in search keys")
            pos = sp(buf, pos)
    if first and first in b"0123456789*":
        sequence, pos = parse_sequence_set(buf, pos)
        return SearchKey("SEQSET", sequence), pos
    name, pos = parse_keyword(buf, pos)
    if name in NO_ARGUMENT:
        return SearchKey(name), pos
    pos = _argument(buf, pos, name)
    if name in STRING_ARGUMENT:
        raw, pos = parse_astring(buf, pos)
        return SearchKey(name, decode(raw)), pos
    if name in DATE_ARGUMENT:
        day, pos = parse_date(buf, pos)
        return SearchKey(name, day), pos
    if name in NUMBER_ARGUMENT:
        size, pos = parse_number(buf, pos)
        return SearchKey(name, size), pos
    if name in FLAG_ARGUMENT:
        flag, pos = parse_flag(buf, pos)
        return SearchKey(name, flag), pos
    if name == "HEADER":
        field, pos = parse_astring(buf, pos)
        pos = sp(buf, pos)
        value, pos = parse_astring(buf, pos)
        return SearchKey(name, (text(field), decode(value))), pos
    if name == "UID":
        sequence, pos = parse_sequence_set(buf, pos)
        return SearchKey(name, sequence), pos
    if name == "NOT":
        child, pos = parse_search_key(buf, pos, decode, depth + 1)
        return SearchKey(name, children=(child,)), pos
    if name == "OR":
        left, pos = parse_search_key(buf, pos, decode, depth + 1)
        pos = sp(buf, pos)
        right, pos = parse_search_key(buf, pos, decode, depth + 1)
        return SearchKey(name, children=(left, right)), pos
    if name == "MODSEQ":
        return _modseq(buf, pos)
    raise ParseError(f"unknown search key {name}")


def _argument(buf: bytes, pos: int, name: str) -> int:
    if pos >= len(buf) or at(buf, pos, b")"):
        raise ParseError(f"search key {name} needs an argument")
    return sp(buf, pos)


def _modseq(buf: bytes, pos: int) -> tuple[SearchKey, int]:
    """``MODSEQ ["/flags/\\\\Seen" priv|shared|all] n`` (RFC 7162 §3.1.5); the entry is checked, then ignored."""
    if at(buf, pos, b'"'):
        entry, pos = parse_quoted(buf, pos)
        if not entry.lower().startswith(b"/flags/") or len(entry) == 7:
            raise ParseError("MODSEQ entry name must be /flags/<flag>")
        pos = sp(buf, pos)
        kind, pos = parse_keyword(buf, pos)
        if kind not in MODSEQ_ENTRY_TYPES:
            raise ParseError("MODSEQ entry type must be priv, shared or all")
        pos = sp(buf, pos)
    value, pos = parse_modseq(buf, pos, zero_ok=True)
    return SearchKey("MODSEQ", value), pos
