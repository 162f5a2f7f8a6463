"""IMAP SEARCH evaluated over stored messages (RFC 3501 §6.4.4, MODSEQ of RFC 7162 §3.1.5).

A search program (a :class:`SearchKey` tree) is compiled once into a :class:`SearchPlan`:

* ``query``: a MongoDB filter that is a *superset* of the matches, using only plain
  operators on stored fields (uid ranges, flags, size, internal_date, modseq), so the
  ``{folder, uid}`` index narrows the read and flag-only searches never touch text;
* ``projection``: the fields the exact predicate reads (no envelope, structure or raw
  bytes unless a key needs them);
* ``matches(doc, raw)``: the exact predicate. Raw bytes are needed only by HEADER
  (fields outside the envelope), BODY and TEXT, and :func:`search` reads them per
  message, lazily, after cheaper keys have had their say.

Every key that the query expresses exactly is marked so; NOT is pushed into the query
(``$nor``) only over an exact child, so the query never loses a match.

Choices where the RFC leaves room:

* BEFORE/ON/SINCE compare the internal date's calendar day in UTC (the server's time zone).
* SENTBEFORE/SENTON/SENTSINCE compare the day written in the Date header, in the header's
  own zone ("disregarding time and timezone"); a message without a parsable Date matches none.
* String keys match a case-insensitive (Unicode casefold) substring of decoded text:
  RFC 2047 words decoded in headers; transfer- and charset-decoded text/* parts in bodies.
  FROM/TO/CC/BCC read the envelope addresses as ``Name <mailbox@host>``.
* KEYWORD compares flags exactly as stored (the parser canonicalises system flags).
* Envelope keys read the stored envelope; a message stored without one (too complex
  to parse at delivery) has its header block read instead, so the raw loader's fields
  are projected for them too, though normal messages never have their bytes read.
"""
from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta, timezone
from email import policy
from email.message import Message
from email.parser import BytesParser
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Optional, Sequence

from mailappliance.protocol.imap.types import SearchKey, SequenceSet
from mailappliance.services.mime import MAX_BOUNDARY_LINES, MAX_HEADER_LINES, decode_text
from mailappliance.services.mime import envelope as envelope_of

# Flag keys and the flag they test (RFC 3501 §6.4.4); the UN- forms are their negation.
FLAG_KEYS = {
    "ANSWERED": "\\Answered", "DELETED": "\\Deleted", "DRAFT": "\\Draft", "FLAGGED": "\\Flagged", "SEEN": "\\Seen",
}
UNFLAG_KEYS = {"UN" + name: flag for name, flag in FLAG_KEYS.items()}
ADDRESS_KEYS = {"FROM": "from", "TO": "to", "CC": "cc", "BCC": "bcc"}
# Header fields answered from the stored envelope instead of the raw header block.
ENVELOPE_HEADERS = {
    "date": "date", "subject": "subject", "from": "from", "sender": "sender", "reply-to": "reply_to",
    "to": "to", "cc": "cc", "bcc": "bcc", "in-reply-to": "in_reply_to", "message-id": "message_id",
}
DATE_KEYS = ("BEFORE", "ON", "SINCE")
SENT_KEYS = ("SENTBEFORE", "SENTON", "SENTSINCE")
MAX_QUERY_RANGES = 50  # UID ranges written into the query; more are read as their span
MAX_QUERY_UIDS = 1000  # \Recent UIDs written into the query as $in
RAW_FIELDS = ("blob", "size")  # what MessageStore.raw() reads from a document
NOTHING: dict = {"uid": {"$in": []}}  # a filter no document matches

# Rough costs, so AND and OR try cheap tests first and raw bytes are read last.
COST_DOC, COST_ENVELOPE, COST_RAW = 1, 10, 1000

_PARSER = BytesParser(policy=policy.compat32)
_ASCII_CHARSETS = frozenset({"us-ascii", "ascii", "ansi_x3.4-1968", "iso646-us"})


class SearchError(ValueError):
    """A search program that cannot be evaluated (an unknown key): a tagged BAD."""


@dataclass
class SearchContext:
    """The session's view of the folder.

    ``uids``: the UIDs it knows, ascending, in message sequence number order (msn = index + 1).
    ``recent``: the UIDs that are \\Recent for this session (RFC 3501 §2.3.2).
    """

    uids: Sequence[int]
    recent: frozenset[int] = frozenset()


# ---------------------------------------------------------------- the message under test


class _Message:
    """One stored document, with its raw bytes and derived text computed at most once."""

    __slots__ = ("doc", "_load", "_raw", "_parsed", "_cache")

    def __init__(self, doc: dict, load: Callable[[], Optional[bytes]]) -> None:
        self.doc = doc
        self._load = load
        self._raw: Optional[bytes] = None
        self._parsed: Optional[Message] = None
        self._cache: dict[str, Any] = {}

    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = self._load() or b""
        return self._raw

    def cached(self, name: str, make: Callable[[], Any]) -> Any:
        if name not in self._cache:
            self._cache[name] = make()
        return self._cache[name]

    def header_block(self) -> Message:
        """The raw header block, parsed (RFC 5322 §2.2)."""
        if self._parsed is None:
            raw = self.raw()
            end = raw.find(b"\r\n\r\n")
            if end < 0:
                end = raw.find(b"\n\n")
            header = raw if end < 0 else raw[: end + 2]
            if header.count(b"\n") > MAX_HEADER_LINES:
                header = b"\r\n".join(header.split(b"\n")[:MAX_HEADER_LINES])
            self._parsed = _PARSER.parsebytes(header, headersonly=True)
        return self._parsed

    def envelope(self) -> dict:
        """The stored envelope; for mail stored without one (too complex to parse at
        delivery, see ``mime``), one made from the raw header block if it is at hand."""
        stored = self.doc.get("envelope")
        if stored:
            return stored
        return self.cached("envelope", lambda: envelope_of(self.header_block()) if self.raw() else {})


def _contains(haystack: str, needle: str) -> bool:
    return needle.casefold() in haystack.casefold()


def _utc(value: Any) -> Optional[datetime]:
    if not isinstance(value, datetime):
        return None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time(0), tzinfo=timezone.utc)


def render_addresses(addresses: Optional[Iterable[Sequence[Optional[str]]]]) -> str:
    """Envelope addresses as decoded text: ``Zoë <zoe@a.example>, bob@b.example``."""
    rendered = []
    for address in addresses or ():
        name, _adl, mailbox, host = (list(address) + [None] * 4)[:4]
        addr = f"{mailbox or ''}@{host}" if host else (mailbox or "")
        display = decode_text(name) if name else ""
        rendered.append(f"{display} <{addr}>" if display else addr)
    return ", ".join(rendered)


def _subject(msg: _Message) -> str:
    def make() -> str:
        subject = msg.doc.get("subject")
        if subject is None or not msg.doc.get("envelope"):
            subject = decode_text(msg.envelope().get("subject"))
        return subject

    return msg.cached("subject", make)


def _sent_day(msg: _Message) -> Optional[date]:
    """The calendar day of the Date header, in the header's own zone (RFC 3501 §6.4.4)."""
    def make() -> Optional[date]:
        text = msg.envelope().get("date")
        if not text:
            return None
        try:
            return parsedate_to_datetime(text).date()
        except (TypeError, ValueError, IndexError, OverflowError):
            return None

    return msg.cached("sent_day", make)


def _envelope_header(msg: _Message, name: str) -> Optional[str]:
    """An envelope field as searchable text; ``None`` when the message lacks the field."""
    value = msg.envelope().get(ENVELOPE_HEADERS[name])
    if name == "subject":
        return None if value is None else _subject(msg)
    if isinstance(value, list):
        return render_addresses(value) if value else None
    if value is None:
        return None
    decoded = decode_text(value)
    return value if decoded == value else f"{value}\n{decoded}"


def _raw_header(msg: _Message, name: str) -> Optional[list[str]]:
    values = msg.header_block().get_all(name)
    if values is None:
        return None
    return [decode_text(str(v)) if v is not None else "" for v in values]


def _header_text(msg: _Message) -> str:
    def make() -> str:
        return "\n".join(f"{name}: {decode_text(str(value))}" for name, value in msg.header_block().items())

    return msg.cached("header_text", make)


def _body_text(msg: _Message) -> str:
    return msg.cached("body_text", lambda: body_text(msg.raw()))


def body_text(raw: bytes) -> str:
    """The text/* parts of a message, transfer- and charset-decoded, one after another.

    Mail too complex to parse safely (see ``mime``) is searched as its undecoded body.
    """
    end = raw.find(b"\r\n\r\n")
    header = raw if end < 0 else raw[:end]
    if header.count(b"\n") > MAX_HEADER_LINES or raw.count(b"\n--") > MAX_BOUNDARY_LINES:
        return (raw[end + 4:] if end >= 0 else b"").decode("utf-8", "replace")
    try:
        message = _PARSER.parsebytes(raw)
        texts = []
        for part in message.walk():
            if part.is_multipart() or part.get_content_maintype() != "text":
                continue
            payload = part.get_payload(decode=True)
            if isinstance(payload, bytes):
                texts.append(_decode(payload, part.get_content_charset()))
        return "\n".join(texts)
    except Exception:  # the parser is lenient; whatever slips through is searched undecoded
        return (raw[end + 4:] if end >= 0 else raw).decode("utf-8", "replace")


def _decode(payload: bytes, charset: Optional[str]) -> str:
    name = (charset or "us-ascii").lower()
    if name in _ASCII_CHARSETS:  # mislabelled 8-bit mail is most often UTF-8
        name = "utf-8"
    try:
        return payload.decode(name, "replace")
    except LookupError:
        return payload.decode("utf-8", "replace")


# ---------------------------------------------------------------- compiled nodes


Test = Callable[[_Message], bool]


@dataclass
class _Node:
    """A compiled key: its query (``None``: no constraint), whether that query is exact over
    the session's messages, the exact test, its cost and the fields the test reads."""

    test: Test
    query: Optional[dict] = None
    exact: bool = False
    cost: int = COST_DOC
    fields: frozenset[str] = frozenset()
    raw: bool = False


def _always(_msg: _Message) -> bool:
    return True


def _never(_msg: _Message) -> bool:
    return False


class _Compiler:
    def __init__(self, ctx: SearchContext) -> None:
        self.uids = list(ctx.uids)
        self.recent = ctx.recent
        self.highest_uid = max(self.uids) if self.uids else 0

    # ------------------------------------------------------------ combinations
    def compile(self, key: SearchKey) -> _Node:
        name = key.name.upper()
        if name == "AND":
            return self.all_of([self.compile(c) for c in _flatten(key, "AND")])
        if name == "OR":
            if len(key.children) != 2:
                raise SearchError("OR takes two search keys")
            return self.any_of([self.compile(c) for c in _flatten(key, "OR")])
        if name == "NOT":
            if len(key.children) != 1:
                raise SearchError("NOT takes one search key")
            return self.negate(self.compile(key.children[0]))
        return self.leaf(name, key.value)

    def all_of(self, nodes: list[_Node]) -> _Node:
        if len(nodes) == 1:
            return nodes[0]
        nodes = sorted(nodes, key=lambda n: n.cost)
        tests = [n.test for n in nodes]
        queries = [n.query for n in nodes if n.query is not None]
        return _Node(
            test=lambda m: all(t(m) for t in tests),
            query=_merge_and(queries),
            exact=all(n.exact for n in nodes),
            cost=sum(n.cost for n in nodes),
            fields=frozenset().union(*(n.fields for n in nodes)),
            raw=any(n.raw for n in nodes),
        )

    def any_of(self, nodes: list[_Node]) -> _Node:
        nodes = sorted(nodes, key=lambda n: n.cost)
        tests = [n.test for n in nodes]
        open_ended = any(n.query is None for n in nodes)
        return _Node(
            test=lambda m: any(t(m) for t in tests),
            query=None if open_ended else {"$or": [n.query for n in nodes]},
            exact=all(n.exact for n in nodes),
            cost=sum(n.cost for n in nodes),
            fields=frozenset().union(*(n.fields for n in nodes)),
            raw=any(n.raw for n in nodes),
        )

    def negate(self, node: _Node) -> _Node:
        test = node.test
        query: Optional[dict] = None
        if node.exact:
            query = NOTHING if node.query is None else _negate_query(node.query)
        return _Node(
            test=lambda m: not test(m), query=query, exact=node.exact, cost=node.cost, fields=node.fields, raw=node.raw
        )

    # ------------------------------------------------------------ single keys
    def leaf(self, name: str, value: Any) -> _Node:
        if name == "ALL":
            return _Node(test=_always, exact=True)
        if name in FLAG_KEYS:
            return _flag(FLAG_KEYS[name])
        if name in UNFLAG_KEYS:
            return self.negate(_flag(UNFLAG_KEYS[name]))
        if name == "KEYWORD":
            return _flag(str(value))
        if name == "UNKEYWORD":
            return self.negate(_flag(str(value)))
        if name == "RECENT":
            return self.recent_node()
        if name == "NEW":
            return self.all_of([self.recent_node(), self.negate(_flag("\\Seen"))])
        if name == "OLD":
            return self.negate(self.recent_node())
        if name == "UID":
            return self.uid_node(_sequence(value).resolve(self.highest_uid))
        if name == "SEQSET":
            return self.uid_node(self.msn_to_uid(_sequence(value).resolve(len(self.uids))))
        if name in ("LARGER", "SMALLER"):
            return _size(name, int(value))
        if name == "MODSEQ":
            return _modseq(int(value))
        if name in DATE_KEYS:
            return _internal_date(name, _day(value))
        if name in SENT_KEYS:
            return _sent_date(name, _day(value))
        if name in ADDRESS_KEYS:
            return _address(ADDRESS_KEYS[name], str(value))
        if name == "SUBJECT":
            needle = str(value)
            return _Node(
                test=lambda m: _contains(_subject(m), needle),
                cost=COST_ENVELOPE,
                fields=frozenset({"subject", "envelope.subject"}),
            )
        if name == "HEADER":
            field_name, needle = value
            return _header(str(field_name), str(needle))
        if name == "BODY":
            needle = str(value)
            return _Node(test=lambda m: _contains(_body_text(m), needle), cost=COST_RAW, raw=True)
        if name == "TEXT":
            needle = str(value)
            return _Node(
                test=lambda m: _contains(_header_text(m), needle) or _contains(_body_text(m), needle),
                cost=COST_RAW + 1,
                raw=True,
            )
        raise SearchError(f"Unknown search key {name}")

    def recent_node(self) -> _Node:
        recent = self.recent
        query = {"uid": {"$in": sorted(recent)}} if len(recent) <= MAX_QUERY_UIDS else None
        return _Node(test=lambda m: m.doc.get("uid") in recent, query=query, exact=query is not None, fields=frozenset({"uid"}))

    def msn_to_uid(self, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Message number ranges as UID ranges over this session's messages."""
        count = len(self.uids)
        result = []
        for low, high in spans:
            low, high = max(low, 1), min(high, count)
            if low <= high:
                result.append((self.uids[low - 1], self.uids[high - 1]))
        return result

    def uid_node(self, spans: list[tuple[int, int]]) -> _Node:
        lows = [low for low, _ in spans]

        def test(m: _Message) -> bool:
            uid = m.doc.get("uid", 0)
            i = bisect.bisect_right(lows, uid) - 1
            return i >= 0 and uid <= spans[i][1]

        if not spans:
            return _Node(test=_never, query=NOTHING, exact=True)
        exact = len(spans) <= MAX_QUERY_RANGES
        if exact:
            ors = [_uid_range(low, high) for low, high in spans]
            query = ors[0] if len(ors) == 1 else {"$or": ors}
        else:
            query = _uid_range(spans[0][0], spans[-1][1])
        return _Node(test=test, query=query, exact=exact, fields=frozenset({"uid"}))


def _flatten(key: SearchKey, op: str) -> list[SearchKey]:
    """The operands of nested ANDs (or ORs) as one list, without recursion."""
    found, stack = [], [key]
    while stack:
        node = stack.pop()
        if node.name.upper() == op and (op == "AND" or len(node.children) == 2):
            stack.extend(reversed(node.children))
        else:
            found.append(node)
    return found


def _sequence(value: Any) -> SequenceSet:
    if not isinstance(value, SequenceSet):
        raise SearchError("a sequence set was expected")
    return value


def _day(value: Any) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    raise SearchError("a date was expected")


def _uid_range(low: int, high: int) -> dict:
    return {"uid": low} if low == high else {"uid": {"$gte": low, "$lte": high}}


def _uid_bounds(query: dict) -> Optional[tuple[int, int]]:
    """``(low, high)`` when ``query`` is exactly one UID range."""
    if list(query) != ["uid"]:
        return None
    cond = query["uid"]
    if isinstance(cond, int):
        return cond, cond
    if isinstance(cond, dict) and sorted(cond) == ["$gte", "$lte"]:
        return cond["$gte"], cond["$lte"]
    return None


def _negate_query(query: dict) -> Optional[dict]:
    """The exact complement of an exact filter; ``None`` for "no constraint"."""
    if query == NOTHING:
        return None
    if list(query) == ["flags"] and isinstance(query["flags"], str):
        return {"flags": {"$ne": query["flags"]}}
    if list(query) == ["$nor"] and len(query["$nor"]) == 1:
        return query["$nor"][0]
    return {"$nor": [query]}


def _merge_and(queries: list[dict]) -> Optional[dict]:
    """AND of filters, with flag tests folded into one ``$all``/``$nin``."""
    if any(q == NOTHING for q in queries):
        return NOTHING
    present, absent, rest = [], [], []
    for q in queries:
        flags = q.get("flags") if list(q) == ["flags"] else None
        if isinstance(flags, str):
            present.append(flags)
        elif isinstance(flags, dict) and list(flags) == ["$ne"]:
            absent.append(flags["$ne"])
        elif q:
            rest.append(q)
    if present or absent:
        condition: dict = {}
        if present:
            condition["$all"] = sorted(set(present))
        if absent:
            condition["$nin"] = sorted(set(absent))
        rest.insert(0, {"flags": condition})
    if not rest:
        return None
    return rest[0] if len(rest) == 1 else {"$and": rest}


def _flag(flag: str) -> _Node:
    return _Node(test=lambda m: flag in (m.doc.get("flags") or ()), query={"flags": flag}, exact=True, fields=frozenset({"flags"}))


def _size(name: str, limit: int) -> _Node:
    if name == "LARGER":
        return _Node(test=lambda m: m.doc.get("size", 0) > limit, query={"size": {"$gt": limit}}, exact=True, fields=frozenset({"size"}))
    return _Node(test=lambda m: m.doc.get("size", 0) < limit, query={"size": {"$lt": limit}}, exact=True, fields=frozenset({"size"}))


def _modseq(value: int) -> _Node:
    """RFC 7162 §3.1.5: messages whose mod-sequence is at least ``value``."""
    if value <= 0:
        return _Node(test=_always, exact=True)
    return _Node(
        test=lambda m: (m.doc.get("modseq") or 0) >= value,
        query={"modseq": {"$gte": value}},
        exact=True,
        fields=frozenset({"modseq"}),
    )


def _internal_date(name: str, day: date) -> _Node:
    start, end = _midnight(day), _midnight(day + timedelta(days=1))

    def when(m: _Message) -> Optional[datetime]:
        return _utc(m.doc.get("internal_date"))

    test: Test
    if name == "BEFORE":
        query: dict = {"internal_date": {"$lt": start}}
        test = lambda m: (d := when(m)) is not None and d < start  # noqa: E731
    elif name == "ON":
        query = {"internal_date": {"$gte": start, "$lt": end}}
        test = lambda m: (d := when(m)) is not None and start <= d < end  # noqa: E731
    else:
        query = {"internal_date": {"$gte": start}}
        test = lambda m: (d := when(m)) is not None and d >= start  # noqa: E731
    return _Node(test=test, query=query, exact=True, fields=frozenset({"internal_date"}))


def _sent_date(name: str, day: date) -> _Node:
    test: Test
    if name == "SENTBEFORE":
        test = lambda m: (d := _sent_day(m)) is not None and d < day  # noqa: E731
    elif name == "SENTON":
        test = lambda m: _sent_day(m) == day  # noqa: E731
    else:
        test = lambda m: (d := _sent_day(m)) is not None and d >= day  # noqa: E731
    return _Node(test=test, cost=COST_ENVELOPE, fields=frozenset({"envelope.date"}))


def _address(field_name: str, needle: str) -> _Node:
    def test(m: _Message) -> bool:
        text = m.cached("addr:" + field_name, lambda: render_addresses(m.envelope().get(field_name)))
        return _contains(text, needle)

    return _Node(test=test, cost=COST_ENVELOPE, fields=frozenset({"envelope." + field_name}))


def _header(field_name: str, needle: str) -> _Node:
    """HEADER field string: an empty string matches every message that has the field."""
    name = field_name.strip().lower()
    if name in ENVELOPE_HEADERS:
        def from_envelope(m: _Message) -> bool:
            text = _envelope_header(m, name)
            return text is not None and _contains(text, needle)

        fields = {"envelope." + ENVELOPE_HEADERS[name]} | ({"subject"} if name == "subject" else set())
        return _Node(test=from_envelope, cost=COST_ENVELOPE, fields=frozenset(fields))

    def from_raw(m: _Message) -> bool:
        values = _raw_header(m, name)
        return values is not None and any(_contains(v, needle) for v in values)

    return _Node(test=from_raw, cost=COST_RAW, raw=True)


# ---------------------------------------------------------------- the plan


@dataclass
class SearchPlan:
    """A compiled search program: see the module docstring.

    ``query`` is to be AND-ed with ``{"folder": id}`` by the caller (it never names
    ``folder``); ``projection`` always includes ``uid``.
    """

    query: dict
    projection: Optional[dict]
    needs_raw: bool
    _test: Test = field(repr=False)
    _known: frozenset[int] = field(repr=False, default=frozenset())

    def matches(self, doc: dict, raw: Optional[bytes] = None) -> bool:
        """The exact predicate; ``raw`` is needed only when ``needs_raw``."""
        return self.evaluate(doc, lambda: raw)

    def evaluate(self, doc: dict, load_raw: Callable[[], Optional[bytes]]) -> bool:
        """The exact predicate, calling ``load_raw`` only if a key needs the bytes of this message."""
        if doc.get("uid") not in self._known:
            return False
        return self._test(_Message(doc, load_raw))


def compile_search(key: SearchKey, ctx: SearchContext, raw_fields: Sequence[str] = RAW_FIELDS) -> SearchPlan:
    """Compile ``key`` for the session described by ``ctx`` (RFC 3501 §6.4.4).

    ``raw_fields`` are the document fields the raw loader reads; they are projected
    only when some key needs raw bytes.
    """
    node = _Compiler(ctx).compile(key)
    known = frozenset(ctx.uids)
    query: dict = {"uid": {"$gte": min(known), "$lte": max(known)}} if known else dict(NOTHING)
    if node.query == NOTHING:
        query = dict(NOTHING)
    elif node.query and known:
        # The session's UID span stays a top-level condition, where the index sees it.
        bounds = _uid_bounds(node.query)
        if bounds is not None:
            low, high = max(bounds[0], min(known)), min(bounds[1], max(known))
            query = _uid_range(low, high) if low <= high else dict(NOTHING)
        elif "uid" in node.query or "$and" in node.query:
            query["$and"] = node.query["$and"] if list(node.query) == ["$and"] else [node.query]
        else:
            query.update(node.query)
    fields = set(node.fields) | {"uid"}
    if node.raw or any(name.startswith("envelope.") for name in fields):
        fields |= set(raw_fields)  # envelope keys read raw bytes only when a message has no envelope
    projection = {name: 1 for name in sorted(fields)}
    if "_id" not in fields:
        projection["_id"] = 0
    return SearchPlan(query=query, projection=projection, needs_raw=node.raw, _test=node.test, _known=known)


def search(
    collection_find: Callable[..., Any],
    folder_id: Any,
    key: SearchKey,
    ctx: SearchContext,
    load_raw: Callable[[dict], bytes],
    raw_fields: Sequence[str] = RAW_FIELDS,
) -> list[int]:
    """UIDs of the session's messages matching ``key``, ascending.

    ``collection_find`` is ``messages.find``; ``load_raw(doc)`` returns a message's
    bytes from a document holding ``raw_fields`` and is called only for messages whose
    cheaper keys did not already decide. Reads in UID order on the ``{folder, uid}`` index.
    """
    plan = compile_search(key, ctx, raw_fields)
    cursor = collection_find({"folder": folder_id, **plan.query}, plan.projection).sort("uid", 1)
    found = []
    for doc in cursor:
        if plan.evaluate(doc, functools.partial(load_raw, doc)):
            found.append(doc["uid"])
    return found
