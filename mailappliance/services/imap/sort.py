"""IMAP SORT and THREAD (RFC 5256) over stored message documents.

Documents need ``uid``, ``internal_date``, ``size``, ``envelope`` (raw Date and
Subject, address lists, Message-ID, In-Reply-To) and ``references``; ``subject``
(decoded) is used when a document has no envelope. Strings compare with the
``i;ascii-casemap`` collation (RFC 4790 §9.2): ASCII letters fold to upper case,
everything else compares by code point, which is the order of its UTF-8 octets.

Nothing here recurses over a thread's depth: reply chains thousands deep are walked
with explicit stacks.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Callable, Iterable, Optional, Sequence

from mailappliance.protocol.imap.types import SortCriterion
from mailappliance.services.mime import decode_text, message_ids

SORT_KEYS = ("ARRIVAL", "CC", "DATE", "FROM", "SIZE", "SUBJECT", "TO")
THREAD_ALGORITHMS = ("ORDEREDSUBJECT", "REFERENCES")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
# Subjects are cut to this many characters before extracting the base subject, which
# strips one prefix at a time: a hostile megabyte of "Re:" must not cost quadratic time.
MAX_SUBJECT_CHARS = 2000
_ASCII_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")


def casemap(text: str) -> str:
    """The ``i;ascii-casemap`` comparison key of ``text`` (RFC 4790 §9.2)."""
    return text.translate(_ASCII_UPPER)


# ---------------------------------------------------------------- base subject (RFC 5256 §2.1)

_WSP_RUN = re.compile(r"[ \t\r\n]+")
_BLOB = r"\[[^\[\]]*\][ ]*"  # subj-blob: BLOBCHAR is any octet but "[" and "]"
_REFWD = re.compile(rf"^(?:{_BLOB})*(?:re|fwd?)[ ]*(?:{_BLOB})?:", re.IGNORECASE)  # step 3
_LEADING_BLOB = re.compile(rf"^{_BLOB}")  # step 4
_FWD_HEADER = re.compile(r"^\[fwd:(.*)\]$", re.IGNORECASE | re.DOTALL)  # step 6


def extract_base_subject(subject: str) -> tuple[str, bool]:
    """The base subject of an already RFC 2047-decoded subject, and whether it is a
    reply or forward (it had a ``Re:``/``Fw:``/``Fwd:`` leader, a ``(fwd)`` trailer
    or a ``[fwd: ...]`` wrapper). RFC 5256 §2.1 steps 1-6."""
    text = _WSP_RUN.sub(" ", subject[:MAX_SUBJECT_CHARS])  # step 1: tabs and continuations become one space
    refwd = False
    while True:
        while True:  # step 2: trailing "(fwd)" and spaces
            if text.endswith(" "):
                text = text.rstrip(" ")
            elif text[-5:].lower() == "(fwd)":
                text, refwd = text[:-5], True
            else:
                break
        while True:  # step 5: repeat steps 3 and 4 until nothing changes
            before = text
            while True:  # step 3
                if text.startswith(" "):
                    text = text.lstrip(" ")
                    continue
                match = _REFWD.match(text)
                if not match:
                    break
                text = text[match.end():]
                refwd = True
            match = _LEADING_BLOB.match(text)  # step 4: only if something is left
            if match and text[match.end():].strip(" "):
                text = text[match.end():]
            if text == before:
                break
        wrapped = _FWD_HEADER.match(text)  # step 6
        if not wrapped:
            return text, refwd
        text = wrapped.group(1)
        refwd = True


def base_subject(doc: dict) -> str:
    """The RFC 5256 §2.1 base subject of a stored message."""
    return _subject_info(doc)[0]


def _subject_info(doc: dict) -> tuple[str, bool]:
    envelope = doc.get("envelope") or {}
    raw = envelope.get("subject")
    text = decode_text(raw) if raw is not None else (doc.get("subject") or "")
    return extract_base_subject(text)


# ---------------------------------------------------------------- dates and addresses


def _utc(value: Any) -> datetime:
    if not isinstance(value, datetime):
        return _EPOCH
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def arrival(doc: dict) -> datetime:
    return _utc(doc.get("internal_date"))


def sent_date(doc: dict) -> datetime:
    """RFC 5256 §3 DATE: the Date header in UTC, else the internal date."""
    text = (doc.get("envelope") or {}).get("date")
    if text:
        try:
            return _utc(parsedate_to_datetime(text))  # "-0000" gives a naive time: UTC
        except (TypeError, ValueError, IndexError, OverflowError):
            pass
    return arrival(doc)


def first_mailbox(doc: dict, field_name: str) -> str:
    """The addr-mailbox (local part) of the first address of an envelope field (RFC 5256 §3)."""
    for address in (doc.get("envelope") or {}).get(field_name) or ():
        if len(address) > 2 and address[2]:
            return str(address[2])
        return ""
    return ""


_SORT_VALUES: dict[str, Callable[[dict], Any]] = {
    "ARRIVAL": arrival,
    "CC": lambda d: casemap(first_mailbox(d, "cc")),
    "DATE": sent_date,
    "FROM": lambda d: casemap(first_mailbox(d, "from")),
    "SIZE": lambda d: d.get("size") or 0,
    "SUBJECT": lambda d: casemap(base_subject(d)),
    "TO": lambda d: casemap(first_mailbox(d, "to")),
}


def sort_uids(docs: Iterable[dict], criteria: Sequence[SortCriterion]) -> list[int]:
    """RFC 5256 §3 SORT: UIDs ordered by ``criteria``; full ties keep UID (sequence) order.

    REVERSE applies to its own key only, so the sort is done key by key, last first,
    relying on the stability of Python's sort (which also holds with ``reverse=True``).
    """
    for criterion in criteria:
        if criterion.key.upper() not in _SORT_VALUES:
            raise ValueError(f"unknown sort key {criterion.key}")
    ordered = sorted(docs, key=lambda d: d["uid"])
    for criterion in reversed(criteria):
        value = _SORT_VALUES[criterion.key.upper()]
        keyed = [(value(d), d) for d in ordered]
        keyed.sort(key=lambda pair: pair[0], reverse=criterion.reverse)
        ordered = [d for _, d in keyed]
    return [d["uid"] for d in ordered]


# ---------------------------------------------------------------- THREAD


@dataclass(eq=False)
class ThreadNode:
    """A message (``uid``) or a dummy (``uid is None``) with its replies."""

    uid: Optional[int]
    children: list["ThreadNode"] = field(default_factory=list)
    parent: Optional["ThreadNode"] = field(default=None, repr=False)
    date: datetime = field(default=_EPOCH, repr=False)
    subject: tuple[str, bool] = field(default=("", False), repr=False)

    def shape(self) -> Any:
        """``uid`` for a leaf, else ``(uid, [children])``: a plain value for comparisons."""
        return _shape(self)


def _shape(node: ThreadNode) -> Any:
    # Post-order without recursion.
    done: dict[int, Any] = {}
    stack: list[tuple[ThreadNode, bool]] = [(node, False)]
    while stack:
        current, expanded = stack.pop()
        if not current.children:
            done[id(current)] = current.uid
        elif expanded:
            done[id(current)] = (current.uid, [done[id(c)] for c in current.children])
        else:
            stack.append((current, True))
            stack.extend((c, False) for c in current.children)
    return done[id(node)]


def thread(docs: Iterable[dict], algorithm: str) -> list[ThreadNode]:
    """RFC 5256 §3 THREAD: the threads of ``docs`` as a list of trees, in order."""
    name = algorithm.upper()
    ordered = sorted(docs, key=lambda d: d["uid"])
    if name == "ORDEREDSUBJECT":
        return _ordered_subject([_message_node(d) for d in ordered])
    if name == "REFERENCES":
        return _references(ordered)
    raise ValueError(f"unknown threading algorithm {algorithm}")


def _message_node(doc: dict, node: Optional[ThreadNode] = None) -> ThreadNode:
    """``node`` (a dummy that was waiting for this message) or a new node, filled in from ``doc``."""
    node = node or ThreadNode(uid=None)
    node.uid, node.date, node.subject = doc["uid"], sent_date(doc), _subject_info(doc)
    return node


def _date_key(node: ThreadNode) -> tuple[datetime, int]:
    """Sent date, then sequence order; a dummy sorts as its first child."""
    while node.uid is None and node.children:
        node = node.children[0]
    return node.date, node.uid or 0


def _ordered_subject(nodes: list[ThreadNode]) -> list[ThreadNode]:
    """ORDEREDSUBJECT: group by base subject; the first by date is the parent of the rest."""
    ordered = sorted(nodes, key=lambda n: (casemap(n.subject[0]), n.date, n.uid))
    threads: list[ThreadNode] = []
    current_subject: Optional[str] = None
    for node in ordered:
        subject = casemap(node.subject[0])
        if threads and subject == current_subject:
            node.parent = threads[-1]
            threads[-1].children.append(node)
        else:
            threads.append(node)
            current_subject = subject
    threads.sort(key=_date_key)
    return threads


def _is_ancestor(candidate: ThreadNode, node: ThreadNode) -> bool:
    """True when ``candidate`` is ``node`` or one of its ancestors."""
    if not candidate.children:  # the common case, a new message: no walk up a long chain
        return candidate is node
    current: Optional[ThreadNode] = node
    while current is not None:
        if current is candidate:
            return True
        current = current.parent
    return False


def _link(parent: ThreadNode, child: ThreadNode) -> None:
    if child.parent is not None:
        child.parent.children.remove(child)
    child.parent = parent
    parent.children.append(child)


def _references(docs: list[dict]) -> list[ThreadNode]:
    """REFERENCES (RFC 5256 §3), steps 1 to 6; ``docs`` in sequence order."""
    table: dict[str, ThreadNode] = {}  # Message-ID (case-sensitive) to its node
    every: list[ThreadNode] = []

    def container(message_id: str) -> ThreadNode:
        found = table.get(message_id)
        if found is None:
            found = table[message_id] = ThreadNode(uid=None)
            every.append(found)
        return found

    # Step 1: the id table and parent/child links, message by message in sequence order.
    for doc in docs:
        envelope = doc.get("envelope") or {}
        ids = message_ids(envelope.get("message_id") or "")
        own = ids[0] if ids else None
        waiting = table.get(own) if own is not None else None
        if waiting is not None and waiting.uid is None:
            node = _message_node(doc, waiting)  # referenced before it was seen
        else:
            # No Message-ID, or one an earlier message already has: a unique (unnamed) one.
            node = _message_node(doc)
            every.append(node)
            if own is not None and waiting is None:
                table[own] = node
        references = [r for r in doc.get("references") or () if r != own]
        if not references:
            references = [r for r in message_ids(envelope.get("in_reply_to") or "")[:1] if r != own]
        chain = [container(r) for r in references]
        for parent, child in zip(chain, chain[1:]):  # 1.A: never re-parent, never loop
            if child.parent is None and not _is_ancestor(child, parent):
                _link(parent, child)
        # 1.B: the last reference is the parent, replacing any earlier guess.
        if node.parent is not None:
            node.parent.children.remove(node)
            node.parent = None
        if chain and not _is_ancestor(node, chain[-1]):
            _link(chain[-1], node)

    # Step 2: the messages without parents head the threads.
    roots = [n for n in every if n.parent is None]
    # Step 3: prune dummies, bottom up.
    for node in _post_order(roots):
        node.children = _prune(node.children, at_root=False)
        for child in node.children:
            child.parent = node
    roots = _prune(roots, at_root=True)
    for root in roots:
        root.parent = None
    # Step 4: order the threads by date (a dummy's children first).
    for root in roots:
        if root.uid is None:
            root.children.sort(key=_date_key)
    roots.sort(key=_date_key)
    # Step 5: gather threads with the same base subject.
    roots = _merge_subjects(roots)
    # Step 6: order every set of siblings by date, the deepest first.
    for node in _post_order(roots):
        node.children.sort(key=_date_key)
    roots.sort(key=_date_key)
    return roots


def _post_order(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Every node under ``roots``, children before their parents."""
    order: list[ThreadNode] = []
    stack = list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    order.reverse()
    return order


def _prune(children: list[ThreadNode], at_root: bool) -> list[ThreadNode]:
    """Step 3: drop childless dummies; splice a dummy's children in its place, except
    that at the root only a dummy with a single child gives way."""
    kept: list[ThreadNode] = []
    pending = list(reversed(children))
    while pending:
        node = pending.pop()
        if node.uid is None:
            if not node.children:
                continue
            if not at_root or len(node.children) == 1:
                pending.extend(reversed(node.children))
                continue
        kept.append(node)
    return kept


def _thread_subject(node: ThreadNode) -> tuple[str, bool]:
    while node.uid is None and node.children:
        node = node.children[0]
    return node.subject


def _merge_subjects(roots: list[ThreadNode]) -> list[ThreadNode]:
    """Step 5: one subject table, then merge threads that share a base subject."""
    table: dict[str, ThreadNode] = {}
    for root in roots:  # 5.B, 5.C
        subject, refwd = _thread_subject(root)
        if not subject:
            continue
        key = casemap(subject)
        held = table.get(key)
        if held is None:
            table[key] = root
        elif held.uid is not None and (root.uid is None or (_thread_subject(held)[1] and not refwd)):
            table[key] = root
    slots: list[Optional[ThreadNode]] = list(roots)
    position = {id(root): i for i, root in enumerate(roots)}
    for i, root in enumerate(roots):  # 5.D
        subject, refwd = _thread_subject(root)
        if not subject:
            continue
        key = casemap(subject)
        held = table[key]
        if held is root:
            continue
        if held.uid is None and root.uid is None:
            for child in root.children:
                child.parent = held
            held.children.extend(root.children)
            root.children = []
        elif held.uid is None or (refwd and not _thread_subject(held)[1]):
            _link(held, root)
        else:
            dummy = ThreadNode(uid=None)
            _link(dummy, held)
            _link(dummy, root)
            slots[position[id(held)]] = dummy
            position[id(dummy)] = position[id(held)]
            table[key] = dummy
        slots[i] = None
    return [n for n in slots if n is not None]


def render_thread(tree: Sequence[ThreadNode], number: Callable[[int], int] = lambda uid: uid) -> bytes:
    """The ``thread-list`` syntax of RFC 5256 §4: ``(1 2)(3 (4)(5))``.

    ``number`` maps a UID to what the client sees (itself for UID THREAD, else the
    message sequence number). A single reply continues its parent's list; several
    replies are each parenthesised; a dummy is just its children.
    """
    out: list[str] = []
    # Work items: a string to write, or a node whose members to write.
    stack: list[Any] = []
    for root in reversed(tree):
        stack.extend([")", root, "("])
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            out.append(item)
            continue
        node: ThreadNode = item
        work: list[Any] = []
        if node.uid is not None:
            work.append(str(number(node.uid)))
            if node.children:
                work.append(" ")
        if len(node.children) == 1:
            work.append(node.children[0])
        else:
            for child in node.children:
                work.extend(["(", child, ")"])
        stack.extend(reversed(work))
    return "".join(out).encode("ascii")
