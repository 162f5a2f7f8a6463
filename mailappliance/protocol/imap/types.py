"""What the IMAP grammar produces and the session consumes (RFC 3501 §6, §9).

Names and flags keep their client spelling except where the RFC makes them
case-insensitive: command names, fetch attribute names, search keys, status items
and system flags are upper-cased or canonicalised (``\\Seen``) by the parser.
Folder names here are already decoded from modified UTF-7 (RFC 3501 §5.1.3).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterator, Optional, Union

# ---------------------------------------------------------------- sequence sets


@dataclass(frozen=True)
class SequenceSet:
    """RFC 3501 §9 ``sequence-set``: message numbers or UIDs; ``None`` stands for ``*``.

    ``"2:4,7,9:*"`` is ``((2, 4), (7, 7), (9, None))``. A range may be written
    backwards (``4:2``); :meth:`resolve` normalises it.
    """

    ranges: tuple[tuple[Optional[int], Optional[int]], ...]

    def resolve(self, largest: int) -> list[tuple[int, int]]:
        """Ranges as ``(low, high)`` with ``*`` = ``largest``, merged and sorted.

        ``largest`` is the highest message number or UID in use (0 when empty);
        RFC 3501 §6.4.8: ``*`` in a UID range means the highest UID, so ``N:*`` with
        ``N`` above it still matches that one message.
        """
        spans = []
        for first, last in self.ranges:
            a = largest if first is None else first
            b = largest if last is None else last
            if a > b:
                a, b = b, a
            spans.append((a, b))
        spans.sort()
        merged: list[tuple[int, int]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(b, merged[-1][1]))
            else:
                merged.append((a, b))
        return merged

    def contains(self, value: int, largest: int) -> bool:
        return any(a <= value <= b for a, b in self.resolve(largest))

    def values(self, largest: int, limit: int) -> Iterator[int]:
        """Every value in the set that is at most ``limit`` (never unbounded)."""
        for a, b in self.resolve(largest):
            yield from range(max(a, 1), min(b, limit) + 1)


# ---------------------------------------------------------------- FETCH


@dataclass(frozen=True)
class Section:
    """A ``section`` of BODY[...] (RFC 3501 §6.4.5).

    ``part`` is the part number path (``1.2.3`` is ``(1, 2, 3)``; empty for the
    whole message). ``text`` is ``None`` (the whole part), ``"HEADER"``,
    ``"HEADER.FIELDS"``, ``"HEADER.FIELDS.NOT"``, ``"TEXT"`` or ``"MIME"``;
    ``fields`` are the header names of HEADER.FIELDS(.NOT), upper-cased, in the
    client's order.
    """

    part: tuple[int, ...] = ()
    text: Optional[str] = None
    fields: tuple[str, ...] = ()

    def spec(self) -> str:
        """The section as written back in a FETCH response: ``1.2.HEADER.FIELDS (FROM TO)``."""
        pieces = [".".join(str(n) for n in self.part)] if self.part else []
        if self.text:
            text = self.text
            if self.fields:
                text += " (" + " ".join(self.fields) + ")"
            pieces.append(text)
        return ".".join(pieces)


# Attribute names (upper case). BODY with a section is a body section fetch;
# BODY without one is the non-extensible BODYSTRUCTURE (RFC 3501 §7.4.2).
FETCH_NAMES = frozenset(
    {
        "FLAGS", "UID", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY", "BODYSTRUCTURE",
        "RFC822", "RFC822.HEADER", "RFC822.TEXT", "MODSEQ",
    }
)
# RFC 3501 §6.4.5 macros, expanded by the parser.
FETCH_MACROS = {
    "ALL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE"),
    "FAST": ("FLAGS", "INTERNALDATE", "RFC822.SIZE"),
    "FULL": ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY"),
}


@dataclass(frozen=True)
class FetchAttribute:
    """One ``fetch-att``: ``name`` from FETCH_NAMES; ``section`` set only for BODY[...].

    ``partial`` is ``(origin, length)`` from ``<origin.length>``; ``peek`` is true
    for BODY.PEEK[...] (which, unlike BODY[...], does not set ``\\Seen``).
    """

    name: str
    section: Optional[Section] = None
    partial: Optional[tuple[int, int]] = None
    peek: bool = False

    @property
    def sets_seen(self) -> bool:
        """RFC 3501 §6.4.5: BODY[...], RFC822 and RFC822.TEXT set \\Seen."""
        if self.name == "BODY" and self.section is not None:
            return not self.peek
        return self.name in ("RFC822", "RFC822.TEXT")

    def response_name(self) -> str:
        """The item name in the FETCH response: ``BODY[HEADER]<0>`` for ``BODY.PEEK[HEADER]<0.100>``."""
        if self.name == "BODY" and self.section is not None:
            origin = f"<{self.partial[0]}>" if self.partial is not None else ""
            return f"BODY[{self.section.spec()}]{origin}"
        return self.name


# ---------------------------------------------------------------- SEARCH


@dataclass(frozen=True)
class SearchKey:
    """One search key of RFC 3501 §6.4.4 (and MODSEQ of RFC 7162 §3.1.5).

    ``name`` is the upper-case key. A search program (a list of keys) is
    ``SearchKey("AND", children=...)``; a parenthesised list is the same.
    ``value`` by key:

    * no value: ALL ANSWERED DELETED DRAFT FLAGGED NEW OLD RECENT SEEN UNANSWERED
      UNDELETED UNDRAFT UNFLAGGED UNSEEN
    * ``str``: BCC BODY CC FROM SUBJECT TEXT TO KEYWORD UNKEYWORD (keywords keep
      their spelling; system flags are canonicalised, e.g. ``\\Seen``)
    * ``datetime.date``: BEFORE ON SINCE SENTBEFORE SENTON SENTSINCE
    * ``int``: LARGER SMALLER MODSEQ
    * ``tuple[str, str]`` (field name as given, value): HEADER
    * :class:`SequenceSet`: UID (UIDs) and SEQSET (a bare sequence set of message numbers)

    ``children``: NOT has one, OR two, AND any number.
    """

    name: str
    value: Any = None
    children: tuple["SearchKey", ...] = ()


# ---------------------------------------------------------------- commands


@dataclass(frozen=True)
class Command:
    """A parsed command: ``tag``, upper-case ``name`` and its arguments.

    For the UID forms (``UID FETCH`` …) ``name`` is the verb (``FETCH``) and the
    argument object has ``uid=True``. Commands without arguments (CAPABILITY, NOOP,
    LOGOUT, STARTTLS, CHECK, CLOSE, UNSELECT, IDLE, NAMESPACE, EXPUNGE) have
    ``args=None``.
    """

    tag: str
    name: str
    args: Any = None


@dataclass(frozen=True)
class Login:
    user: str
    password: str


@dataclass(frozen=True)
class Authenticate:
    """AUTHENTICATE mechanism [initial-response] (RFC 3501 §6.2.2, RFC 4959 SASL-IR).

    ``initial`` is the base64 text as sent (``"="`` is an empty response), or None.
    """

    mechanism: str
    initial: Optional[str] = None


@dataclass(frozen=True)
class Select:
    """SELECT / EXAMINE (``readonly``), with the CONDSTORE parameter (RFC 7162 §3.1.8)."""

    folder: str
    readonly: bool = False
    condstore: bool = False


@dataclass(frozen=True)
class FolderName:
    """CREATE, DELETE, SUBSCRIBE, UNSUBSCRIBE: one folder name."""

    folder: str


@dataclass(frozen=True)
class Rename:
    old: str
    new: str


@dataclass(frozen=True)
class ListFolders:
    """LIST / LSUB (RFC 3501 §6.3.8-9) with RFC 5258 selection and return options.

    ``select_options`` e.g. ``("SPECIAL-USE", "SUBSCRIBED")``; ``return_options``
    e.g. ``("SPECIAL-USE", "CHILDREN")``; ``patterns`` has one entry unless the
    client used the extended ``(pattern pattern)`` form.
    """

    reference: str
    patterns: tuple[str, ...]
    lsub: bool = False
    select_options: tuple[str, ...] = ()
    return_options: tuple[str, ...] = ()


@dataclass(frozen=True)
class Status:
    """STATUS folder (items): MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ SIZE."""

    folder: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Append:
    """APPEND (RFC 3501 §6.3.11); ``message`` is the literal's exact bytes."""

    folder: str
    flags: tuple[str, ...]
    internal_date: Optional[datetime]
    message: bytes


@dataclass(frozen=True)
class Fetch:
    sequence: SequenceSet
    attributes: tuple[FetchAttribute, ...]
    uid: bool = False
    changedsince: Optional[int] = None  # RFC 7162 §3.1.4


@dataclass(frozen=True)
class Store:
    """STORE set [(UNCHANGEDSINCE n)] [+|-]FLAGS[.SILENT] (flags) (RFC 3501 §6.4.6, RFC 7162 §3.1.3)."""

    sequence: SequenceSet
    mode: str  # "" replace, "+" add, "-" remove
    silent: bool
    flags: tuple[str, ...]
    uid: bool = False
    unchangedsince: Optional[int] = None


@dataclass(frozen=True)
class CopyMove:
    """COPY and MOVE (RFC 6851); ``name`` on the Command tells which."""

    sequence: SequenceSet
    folder: str
    uid: bool = False


@dataclass(frozen=True)
class Search:
    """SEARCH [RETURN (...)] [CHARSET x] keys (RFC 3501 §6.4.4, RFC 4731 ESEARCH options)."""

    key: SearchKey
    charset: Optional[str] = None
    uid: bool = False
    return_options: Optional[tuple[str, ...]] = None  # None: plain SEARCH response


@dataclass(frozen=True)
class SortCriterion:
    """One RFC 5256 sort key: ARRIVAL CC DATE FROM SIZE SUBJECT TO, maybe REVERSE."""

    key: str
    reverse: bool = False


@dataclass(frozen=True)
class Sort:
    criteria: tuple[SortCriterion, ...]
    charset: str
    key: SearchKey
    uid: bool = False


@dataclass(frozen=True)
class Thread:
    algorithm: str  # ORDEREDSUBJECT or REFERENCES
    charset: str
    key: SearchKey
    uid: bool = False


@dataclass(frozen=True)
class UidExpunge:
    """UID EXPUNGE set (RFC 4315 §2.1)."""

    sequence: SequenceSet


@dataclass(frozen=True)
class Enable:
    capabilities: tuple[str, ...]


@dataclass(frozen=True)
class Id:
    """ID (RFC 2971): ``None`` for NIL, else field/value pairs."""

    params: Optional[tuple[tuple[str, Optional[str]], ...]] = None


Arguments = Union[
    None, Login, Authenticate, Select, FolderName, Rename, ListFolders, Status, Append, Fetch, Store,
    CopyMove, Search, Sort, Thread, UidExpunge, Enable, Id,
]


class ParseError(ValueError):
    """The command is malformed: answered with a tagged BAD (untagged if no tag)."""

    def __init__(self, message: str, tag: Optional[str] = None) -> None:
        super().__init__(message)
        self.tag = tag
