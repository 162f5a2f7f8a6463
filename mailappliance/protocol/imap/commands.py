"""IMAP commands (RFC 3501 §6 and extensions), parsed into :class:`types.Command`.

Each parser gets the command after its name (``pos`` at the SP that precedes
the arguments) and returns the argument object and where it stopped;
:func:`parse_command` then insists the command ends there.
"""
from __future__ import annotations

import re
from typing import Any, Callable, Optional

from mailappliance.protocol.imap.grammar import (
    at, expect, finish, parse_astring, parse_atom, parse_date_time, parse_flag, parse_flag_list,
    parse_keyword, parse_list_mailbox, parse_literal, parse_mailbox, parse_modseq, parse_nstring,
    parse_number, parse_nz_number, parse_sequence_set, parse_tag, sp, text,
)
from mailappliance.protocol.imap.searchkeys import parse_search_program
from mailappliance.protocol.imap.types import (
    FETCH_MACROS, FETCH_NAMES, Append, Authenticate, Command, CopyMove, Enable, Fetch, FetchAttribute,
    FolderName, Id, ListFolders, Login, ParseError, Rename, Search, Select, Sort, SortCriterion,
    Section, Status, Store, Thread, UidExpunge,
)

STATUS_ITEMS = frozenset({"MESSAGES", "RECENT", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ", "SIZE", "APPENDLIMIT"})
SEARCH_RETURN_OPTIONS = frozenset({"MIN", "MAX", "ALL", "COUNT"})  # RFC 4731 (SAVE, RFC 5182, is not offered)
SORT_KEYS = frozenset({"ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO"})
LIST_SELECT_OPTIONS = frozenset({"SUBSCRIBED", "REMOTE", "RECURSIVEMATCH", "SPECIAL-USE"})  # RFC 5258, 6154
LIST_RETURN_OPTIONS = frozenset({"SUBSCRIBED", "CHILDREN", "SPECIAL-USE"})
NO_ARGUMENTS = frozenset(
    {"CAPABILITY", "NOOP", "LOGOUT", "STARTTLS", "CHECK", "CLOSE", "UNSELECT", "IDLE", "NAMESPACE", "EXPUNGE"}
)
UID_COMMANDS = frozenset({"FETCH", "SEARCH", "STORE", "COPY", "MOVE", "EXPUNGE", "SORT", "THREAD"})

_FETCH_NAME = re.compile(rb"[A-Za-z0-9.]+")
_SECTION_TEXT = re.compile(rb"[A-Za-z.]+")
_BASE64 = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")  # RFC 4959 "=" aside

Parser = Callable[[bytes, int, str, bool], tuple[Any, int]]


def parse_command(data: bytes) -> Command:
    """One complete command (literals inline, no final CRLF) -> :class:`Command`; ParseError when malformed."""
    tag, pos = parse_tag(data, 0)
    try:
        pos = expect(data, pos, b" ", "command name")
        name, pos = parse_keyword(data, pos)
        uid = name == "UID"
        if uid:
            pos = sp(data, pos)
            name, pos = parse_keyword(data, pos)
            if name not in UID_COMMANDS:
                raise ParseError(f"UID {name} is not a command")
        if name in NO_ARGUMENTS and not uid:
            finish(data, pos)
            return Command(tag, name)
        parser = PARSERS.get(name)
        if parser is None:
            raise ParseError("unknown command")
        args, pos = parser(data, pos, name, uid)
        finish(data, pos)
    except ParseError as exc:
        raise ParseError(str(exc), tag) from None
    return Command(tag, name, args)


# ---------------------------------------------------------------- not authenticated


def _authenticate(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Authenticate, int]:
    """RFC 3501 §6.2.2 with RFC 4959 initial response (``=`` for an empty one)."""
    mechanism, pos = parse_keyword(buf, sp(buf, pos))
    initial = None
    if at(buf, pos, b" "):
        rest = buf[pos + 1 :]
        if rest != b"=" and not (rest and _BASE64.fullmatch(rest)):
            raise ParseError("initial response is not base64")
        initial, pos = rest.decode("ascii"), len(buf)
    return Authenticate(mechanism, initial), pos


def _login(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Login, int]:
    user, pos = parse_astring(buf, sp(buf, pos))
    password, pos = parse_astring(buf, sp(buf, pos))
    return Login(text(user), text(password)), pos


# ---------------------------------------------------------------- authenticated


def _select(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Select, int]:
    """SELECT / EXAMINE folder [(CONDSTORE)] (RFC 4466 select-params, RFC 7162 §3.1.8)."""
    folder, pos = parse_mailbox(buf, sp(buf, pos))
    params: tuple[str, ...] = ()
    if at(buf, pos, b" "):
        params, pos = _options(buf, pos + 1, frozenset({"CONDSTORE"}), "select parameter")
    condstore = "CONDSTORE" in params
    return Select(folder, readonly=name == "EXAMINE", condstore=condstore), pos


def _folder(buf: bytes, pos: int, name: str, uid: bool) -> tuple[FolderName, int]:
    folder, pos = parse_mailbox(buf, sp(buf, pos))
    return FolderName(folder), pos


def _rename(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Rename, int]:
    old, pos = parse_mailbox(buf, sp(buf, pos))
    new, pos = parse_mailbox(buf, sp(buf, pos))
    return Rename(old, new), pos


def _list(buf: bytes, pos: int, name: str, uid: bool) -> tuple[ListFolders, int]:
    """LIST [(select-opts)] reference (pattern | (patterns)) [RETURN (opts)] (RFC 3501 §6.3.8, RFC 5258)."""
    pos = sp(buf, pos)
    select: tuple[str, ...] = ()
    if at(buf, pos, b"("):
        select, pos = _options(buf, pos, LIST_SELECT_OPTIONS, "LIST selection option")
        if select == ("RECURSIVEMATCH",):
            raise ParseError("RECURSIVEMATCH needs another selection option")  # RFC 5258 §3.1
        pos = sp(buf, pos)
    reference, pos = parse_mailbox(buf, pos)
    pos = sp(buf, pos)
    patterns: list[str] = []
    if at(buf, pos, b"("):
        pos += 1
        while True:
            pattern, pos = parse_list_mailbox(buf, pos)
            patterns.append(pattern)
            if at(buf, pos, b")"):
                pos += 1
                break
            pos = sp(buf, pos)
    else:
        pattern, pos = parse_list_mailbox(buf, pos)
        patterns.append(pattern)
    returns: tuple[str, ...] = ()
    if at(buf, pos, b" "):
        word, pos = parse_keyword(buf, pos + 1)
        if word != "RETURN":
            raise ParseError("expected RETURN")
        returns, pos = _options(buf, sp(buf, pos), LIST_RETURN_OPTIONS, "LIST return option")
    return ListFolders(reference, tuple(patterns), select_options=select, return_options=returns), pos


def _lsub(buf: bytes, pos: int, name: str, uid: bool) -> tuple[ListFolders, int]:
    reference, pos = parse_mailbox(buf, sp(buf, pos))
    pattern, pos = parse_list_mailbox(buf, sp(buf, pos))
    return ListFolders(reference, (pattern,), lsub=True), pos


def _status(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Status, int]:
    folder, pos = parse_mailbox(buf, sp(buf, pos))
    pos = sp(buf, pos)
    items, pos = _options(buf, pos, STATUS_ITEMS, "status item")
    if not items:
        raise ParseError("STATUS needs at least one item")
    return Status(folder, items), pos


def _append(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Append, int]:
    """APPEND folder [(flags)] [date-time] literal (RFC 3501 §6.3.11); the message may hold NUL."""
    folder, pos = parse_mailbox(buf, sp(buf, pos))
    pos = sp(buf, pos)
    flags: tuple[str, ...] = ()
    if at(buf, pos, b"("):
        flags, pos = parse_flag_list(buf, pos)
        pos = sp(buf, pos)
    internal_date = None
    if at(buf, pos, b'"'):
        internal_date, pos = parse_date_time(buf, pos)
        pos = sp(buf, pos)
    if not at(buf, pos, b"{"):
        raise ParseError("APPEND needs the message as a literal")
    message, pos = parse_literal(buf, pos, binary=True)
    return Append(folder, flags, internal_date, message), pos


def _enable(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Enable, int]:
    capabilities = []
    while True:
        capability, pos = parse_atom(buf, sp(buf, pos))
        capabilities.append(capability)
        if pos >= len(buf):
            return Enable(tuple(capabilities)), pos


def _id(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Id, int]:
    """ID ("name" "value" ...) or ID NIL (RFC 2971 §3.1)."""
    pos = sp(buf, pos)
    if not at(buf, pos, b"("):
        if buf[pos : pos + 3].upper() != b"NIL":
            raise ParseError("ID needs a parameter list or NIL")
        return Id(None), pos + 3
    pos += 1
    params: list[tuple[str, Optional[str]]] = []
    while not at(buf, pos, b")"):
        if params:
            pos = sp(buf, pos)
        field, pos = parse_astring(buf, pos)
        value, pos = parse_nstring(buf, sp(buf, pos))
        params.append((text(field), None if value is None else text(value)))
    return Id(tuple(params)), pos + 1


# ---------------------------------------------------------------- selected


def _fetch(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Fetch, int]:
    """FETCH set (macro | att | (att ...)) [(CHANGEDSINCE n)] (RFC 3501 §6.4.5, RFC 7162 §3.1.4)."""
    sequence, pos = parse_sequence_set(buf, sp(buf, pos))
    pos = sp(buf, pos)
    attributes: list[FetchAttribute] = []
    if at(buf, pos, b"("):
        pos += 1
        while True:
            attribute, pos = parse_fetch_attribute(buf, pos)
            attributes.append(attribute)
            if at(buf, pos, b")"):
                pos += 1
                break
            pos = sp(buf, pos)
    else:
        match = _FETCH_NAME.match(buf, pos)
        macro = FETCH_MACROS.get(match.group().decode().upper()) if match else None
        if macro is not None and match is not None and not at(buf, match.end(), b"["):
            attributes = [FetchAttribute(n) for n in macro]
            pos = match.end()
        else:
            attribute, pos = parse_fetch_attribute(buf, pos)
            attributes.append(attribute)
    changedsince = None
    if at(buf, pos, b" "):
        pos = expect(buf, pos + 1, b"(")
        word, pos = parse_keyword(buf, pos)
        if word != "CHANGEDSINCE":
            raise ParseError(f"unsupported FETCH modifier {word}")
        changedsince, pos = parse_modseq(buf, sp(buf, pos))
        pos = expect(buf, pos, b")")
    return Fetch(sequence, tuple(attributes), uid=uid, changedsince=changedsince), pos


def parse_fetch_attribute(buf: bytes, pos: int) -> tuple[FetchAttribute, int]:
    """RFC 3501 §9 ``fetch-att`` (plus MODSEQ): ``BODY.PEEK[1.2.HEADER.FIELDS (From)]<0.100>`` etc."""
    match = _FETCH_NAME.match(buf, pos)
    if match is None:
        raise ParseError("expected a fetch attribute")
    name = match.group().decode("ascii").upper()
    pos = match.end()
    if name in ("BODY", "BODY.PEEK") and at(buf, pos, b"["):
        section, pos = _section(buf, pos + 1)
        partial = None
        if at(buf, pos, b"<"):
            origin, pos = parse_number(buf, pos + 1)
            length, pos = parse_nz_number(buf, expect(buf, pos, b"."))
            pos = expect(buf, pos, b">")
            partial = (origin, length)
        return FetchAttribute("BODY", section, partial, peek=name == "BODY.PEEK"), pos
    if name not in FETCH_NAMES:
        raise ParseError(f"unknown fetch attribute {name}")
    return FetchAttribute(name), pos


def _section(buf: bytes, pos: int) -> tuple[Section, int]:
    """Inside ``[...]``: ``1.2``, ``1.2.MIME``, ``HEADER.FIELDS.NOT (a b)``, ``TEXT``… up to ``]``."""
    part: list[int] = []
    need_text = True  # after "[" or "1.": a section text must follow unless the section is empty
    while buf[pos : pos + 1].isdigit():
        number, pos = parse_nz_number(buf, pos)
        part.append(number)
        need_text = at(buf, pos, b".")
        if not need_text:
            break
        pos += 1
    section_text = None
    fields: list[str] = []
    if need_text and (part or not at(buf, pos, b"]")):
        match = _SECTION_TEXT.match(buf, pos)
        if match is None:
            raise ParseError("malformed section")
        section_text = match.group().decode("ascii").upper()
        pos = match.end()
        if section_text not in ("HEADER", "HEADER.FIELDS", "HEADER.FIELDS.NOT", "TEXT", "MIME"):
            raise ParseError(f"unknown section {section_text}")
        if section_text == "MIME" and not part:
            raise ParseError("MIME needs a part number")
        if section_text.startswith("HEADER.FIELDS"):
            pos = expect(buf, sp(buf, pos), b"(")
            while True:
                field, pos = parse_astring(buf, pos)
                fields.append(text(field).upper())
                if at(buf, pos, b")"):
                    pos += 1
                    break
                pos = sp(buf, pos)
    pos = expect(buf, pos, b"]")
    return Section(tuple(part), section_text, tuple(fields)), pos


def _store(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Store, int]:
    """STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags) (RFC 3501 §6.4.6, RFC 7162 §3.1.3)."""
    sequence, pos = parse_sequence_set(buf, sp(buf, pos))
    pos = sp(buf, pos)
    unchangedsince = None
    if at(buf, pos, b"("):
        word, pos = parse_keyword(buf, pos + 1)
        if word != "UNCHANGEDSINCE":
            raise ParseError(f"unsupported STORE modifier {word}")
        unchangedsince, pos = parse_modseq(buf, sp(buf, pos), zero_ok=True)
        pos = sp(buf, expect(buf, pos, b")"))
    mode = ""
    if buf[pos : pos + 1] in (b"+", b"-"):
        mode = buf[pos : pos + 1].decode()
        pos += 1
    item, pos = parse_keyword(buf, pos)
    if item not in ("FLAGS", "FLAGS.SILENT"):
        raise ParseError(f"cannot store {item}")
    pos = sp(buf, pos)
    if at(buf, pos, b"("):
        flags, pos = parse_flag_list(buf, pos)
    else:
        found: list[str] = []
        while True:
            flag, pos = parse_flag(buf, pos, settable=True)
            if flag not in found:
                found.append(flag)
            if not at(buf, pos, b" "):
                break
            pos += 1
        flags = tuple(found)
    return Store(sequence, mode, item == "FLAGS.SILENT", flags, uid=uid, unchangedsince=unchangedsince), pos


def _copy(buf: bytes, pos: int, name: str, uid: bool) -> tuple[CopyMove, int]:
    sequence, pos = parse_sequence_set(buf, sp(buf, pos))
    folder, pos = parse_mailbox(buf, sp(buf, pos))
    return CopyMove(sequence, folder, uid=uid), pos


def _expunge(buf: bytes, pos: int, name: str, uid: bool) -> tuple[UidExpunge, int]:
    sequence, pos = parse_sequence_set(buf, sp(buf, pos))
    return UidExpunge(sequence), pos


def _search(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Search, int]:
    """SEARCH [RETURN (opts)] [CHARSET x] keys (RFC 3501 §6.4.4, RFC 4731)."""
    pos = sp(buf, pos)
    returns = None
    if buf[pos : pos + 7].upper() == b"RETURN ":
        returns, pos = _options(buf, pos + 7, SEARCH_RETURN_OPTIONS, "SEARCH return option")
        pos = sp(buf, pos)
    charset = None
    if buf[pos : pos + 8].upper() == b"CHARSET ":
        charset, pos = _charset(buf, pos + 8)
        pos = sp(buf, pos)
    key, pos = parse_search_program(buf, pos, charset)
    return Search(key, charset=charset, uid=uid, return_options=returns), pos


def _sort(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Sort, int]:
    """SORT (criteria) charset keys (RFC 5256 §3)."""
    pos = expect(buf, sp(buf, pos), b"(")
    criteria = []
    while True:
        word, pos = parse_keyword(buf, pos)
        reverse = word == "REVERSE"
        if reverse:
            word, pos = parse_keyword(buf, sp(buf, pos))
        if word not in SORT_KEYS:
            raise ParseError(f"unknown sort key {word}")
        criteria.append(SortCriterion(word, reverse))
        if at(buf, pos, b")"):
            break
        pos = sp(buf, pos)
    charset, pos = _charset(buf, sp(buf, pos + 1))
    key, pos = parse_search_program(buf, sp(buf, pos), charset)
    return Sort(tuple(criteria), charset, key, uid=uid), pos


def _thread(buf: bytes, pos: int, name: str, uid: bool) -> tuple[Thread, int]:
    """THREAD algorithm charset keys (RFC 5256 §3); the algorithm is checked by the session."""
    algorithm, pos = parse_keyword(buf, sp(buf, pos))
    charset, pos = _charset(buf, sp(buf, pos))
    key, pos = parse_search_program(buf, sp(buf, pos), charset)
    return Thread(algorithm, charset, key, uid=uid), pos


# ---------------------------------------------------------------- helpers


def _charset(buf: bytes, pos: int) -> tuple[str, int]:
    """A charset name (atom or string), upper-cased."""
    raw, pos = parse_astring(buf, pos)
    return text(raw).upper(), pos


def _options(buf: bytes, pos: int, allowed: frozenset[str], what: str) -> tuple[tuple[str, ...], int]:
    """``(WORD WORD ...)`` upper-cased, possibly empty, each one of ``allowed``."""
    pos = expect(buf, pos, b"(")
    words: list[str] = []
    while not at(buf, pos, b")"):
        if words:
            pos = sp(buf, pos)
        word, pos = parse_keyword(buf, pos)
        if word not in allowed:
            raise ParseError(f"unknown {what} {word}")
        if word not in words:
            words.append(word)
    return tuple(words), pos + 1


PARSERS: dict[str, Parser] = {
    "AUTHENTICATE": _authenticate, "LOGIN": _login,
    "SELECT": _select, "EXAMINE": _select,
    "CREATE": _folder, "DELETE": _folder, "SUBSCRIBE": _folder, "UNSUBSCRIBE": _folder,
    "RENAME": _rename, "LIST": _list, "LSUB": _lsub, "STATUS": _status, "APPEND": _append,
    "ENABLE": _enable, "ID": _id,
    "FETCH": _fetch, "STORE": _store, "COPY": _copy, "MOVE": _copy, "EXPUNGE": _expunge,
    "SEARCH": _search, "SORT": _sort, "THREAD": _thread,
}
