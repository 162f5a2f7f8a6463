"""Commands on the messages of the selected folder (RFC 3501 §6.4).

FETCH reads only the fields its attributes need, and raw bytes only for body
sections, so ``FETCH 1:* (FLAGS UID)`` on a large folder reads the small
``{uid, flags, modseq}`` projection of each message and nothing else.
"""
from __future__ import annotations

import logging
from bisect import bisect_left, bisect_right
from typing import TYPE_CHECKING, Iterable, Iterator, Sequence

from mailappliance.protocol.imap import fetch as fetch_render
from mailappliance.protocol.imap.selected import SelectedFolder
from mailappliance.protocol.imap.session import BadArguments, ImapSession, Refused, bad, ok
from mailappliance.protocol.imap.types import Command, FetchAttribute, SearchKey
from mailappliance.services.imap import search as imap_search, sort as imap_sort
from mailappliance.storage.messages import LISTING_FIELDS, ranges_of

if TYPE_CHECKING:
    from mailappliance.services.imap.account import ImapAccount

log = logging.getLogger("mailappliance.imap")

SEEN = "\\Seen"
CHARSETS = ("US-ASCII", "UTF-8")
RAW_BATCH_MESSAGES = 100  # messages whose bytes one query reads during FETCH
RAW_BATCH_BYTES = 8 * 1024 * 1024
# Stored fields each FETCH attribute needs (besides uid, flags and modseq).
FIELDS = {
    "INTERNALDATE": ("internal_date",),
    "RFC822.SIZE": ("size",),
    "ENVELOPE": ("envelope",),
    "BODY": ("structure", "blob", "size"),
    "BODYSTRUCTURE": ("structure", "blob", "size"),
    "RFC822": ("blob", "size"),
    "RFC822.HEADER": ("blob", "size"),
    "RFC822.TEXT": ("blob", "size"),
}
INDEXED = {"FLAGS", "UID", "MODSEQ", "RFC822.SIZE", "INTERNALDATE"}  # FETCH attributes the folder index answers
INDEXED_FIELDS = set(LISTING_FIELDS)  # message fields it holds
SORT_FIELDS = {"uid": 1, "internal_date": 1, "size": 1, "envelope": 1, "subject": 1, "references": 1}


def uid_set(uids: Iterable[int]) -> str:
    """``1:3,7`` (RFC 4315 ``uid-set``)."""
    return ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in ranges_of(uids))


def sequence_text(numbers: Sequence[int]) -> str:
    """Message numbers in the given order as a compact set, for COPYUID pairs (order kept)."""
    out: list[list[int]] = []
    for n in numbers:
        if out and n == out[-1][1] + 1:
            out[-1][1] = n
        else:
            out.append([n, n])
    return ",".join(f"{a}" if a == b else f"{a}:{b}" for a, b in out)


class MessageCommands:
    def __init__(self, account: "ImapAccount") -> None:
        self.account = account
        self.store = account.store
        self.backend = account.backend

    def _view(self, session: ImapSession) -> SelectedFolder:
        assert session.selected is not None
        return session.selected

    def _ranges(self, view: SelectedFolder, args) -> list[tuple[int, int]]:
        if not args.uid and not view.valid_numbers(args.sequence):
            raise BadArguments("Invalid message sequence number")
        return view.uid_ranges(args.sequence, args.uid)

    # ------------------------------------------------------------------ FETCH
    def cmd_fetch(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.4.5; CHANGEDSINCE per RFC 7162 §3.1.4."""
        view = self._view(session)
        args = command.args
        ranges = self._ranges(view, args)
        attributes = list(args.attributes)
        names = {a.name for a in attributes}
        if args.uid and "UID" not in names:
            attributes.insert(0, FetchAttribute("UID"))
        if args.changedsince is not None and "MODSEQ" not in names:
            attributes.append(FetchAttribute("MODSEQ"))
        if "MODSEQ" in names or args.changedsince is not None:
            view.condstore = True
        if {a.name for a in attributes} <= INDEXED and args.changedsince is None:
            yield from self._fetch_from_index(view, ranges, attributes)
            yield ok(command.tag, "FETCH completed")
            return
        projection = {"uid": 1, "flags": 1, "modseq": 1}
        for attribute in attributes:
            projection.update({f: 1 for f in FIELDS.get(attribute.name, ())})
            if attribute.section is not None:
                projection.update(blob=1, size=1, structure=1)
        docs = [
            d for d in self.store.find(view.folder_id, ranges, projection)
            if view.known(d["uid"]) and (args.changedsince is None or d.get("modseq", 0) > args.changedsince)
        ]
        if not view.readonly and any(a.sets_seen for a in attributes):
            self._mark_seen(view, docs, attributes)
        for batch in _raw_batches(docs, attributes):
            raws = self.store.raw_many([d for d in batch if fetch_render.needs_raw(attributes, d)])
            for doc in batch:
                raw = None
                if fetch_render.needs_raw(attributes, doc):
                    raw = raws.get(doc["blob"])
                    if raw is None:
                        if self.store.exists(doc["_id"]):
                            log.error("message %s (uid %d) has no stored bytes", doc["_id"], doc["uid"])
                        continue  # else expunged elsewhere meanwhile: reported at the next sync
                flags = view.flags_with_recent(doc["uid"], doc.get("flags", []))
                number = view.msn(doc["uid"]) or 0
                yield b"* %d FETCH (%s)\r\n" % (number, fetch_render.render(doc, attributes, raw, flags))
        yield ok(command.tag, "FETCH completed")

    def _fetch_from_index(self, view: SelectedFolder, ranges, attributes: list[FetchAttribute]) -> Iterator[bytes]:
        """FLAGS, UID and MODSEQ from the folder index: no message is read (``FETCH 1:* (FLAGS)``)."""
        snapshot = self.backend.index.snapshot(view.folder_id, view.uidvalidity, view.modseq, view.uid_limit)
        for low, high in ranges:
            for uid in _known_between(view, low, high):
                doc = snapshot.messages.get(uid)
                if doc is None:
                    continue  # expunged elsewhere; reported later
                flags = view.flags_with_recent(uid, doc.get("flags", []))
                yield b"* %d FETCH (%s)\r\n" % (view.msn(uid) or 0, fetch_render.render(doc, attributes, None, flags))

    def _mark_seen(self, view: SelectedFolder, docs: list[dict], attributes: list[FetchAttribute]) -> None:
        """RFC 3501 §6.4.5: BODY[...] sets \\Seen; the response then includes FLAGS."""
        unseen = [d["uid"] for d in docs if SEEN not in d.get("flags", [])]
        if not unseen:
            return
        changed, _, _ = self.store.store_flags(view.folder_id, ranges_of(unseen), "+", [SEEN])
        by_uid = {c.uid: c for c in changed}
        for doc in docs:
            change = by_uid.get(doc["uid"])
            if change is not None:
                doc["flags"], doc["modseq"] = change.flags, change.modseq
                view.own_modseqs.add(change.modseq)
        if changed and not any(a.name == "FLAGS" for a in attributes):
            attributes.append(FetchAttribute("FLAGS"))
        self.backend.notify([view.folder_id])

    # ------------------------------------------------------------------ STORE
    def cmd_store(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.4.6; UNCHANGEDSINCE and MODIFIED per RFC 7162 §3.1.3."""
        view = self._view(session)
        args = command.args
        if view.readonly:
            raise Refused("Folder is read-only", "READ-ONLY")
        ranges = self._ranges(view, args)
        known_ranges = ranges_of(u for a, b in ranges for u in _known_between(view, a, b))
        changed, refused, unchanged = self.store.store_flags(
            view.folder_id, known_ranges, args.mode, list(args.flags), args.unchangedsince
        )
        if args.unchangedsince is not None:
            view.condstore = True
        for change in changed:
            view.own_modseqs.add(change.modseq)
        if changed:
            self.backend.notify([view.folder_id])
            keywords = [f for f in args.flags if not f.startswith("\\")]
            if keywords and args.mode != "-":
                self.account.folders.add_keywords(view.folder_id, keywords)
        reported = [] if args.silent else sorted(changed + unchanged, key=lambda c: c.uid)
        for change in reported:
            yield view.fetch_flags(change.uid, change.flags, change.modseq)
        if args.silent and view.condstore:
            for change in changed:  # RFC 7162 §3.1.3: the new MODSEQ even when silent
                yield b"* %d FETCH (UID %d MODSEQ (%d))\r\n" % (view.msn(change.uid) or 0, change.uid, change.modseq)
        if refused:
            numbers = refused if args.uid else [view.msn(u) or 0 for u in refused]
            yield ok(command.tag, "Conditional STORE failed for some messages", f"MODIFIED {sequence_text(sorted(numbers))}")
        else:
            yield ok(command.tag, "STORE completed")

    # ------------------------------------------------------------------ COPY / MOVE / EXPUNGE
    def cmd_copy(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.4.7 with COPYUID (RFC 4315 §3)."""
        view = self._view(session)
        ranges = self._ranges(view, command.args)
        target = self._target(command.args.folder)
        pairs = self._copy(view, ranges, target)
        code = self._copyuid(target, pairs) if pairs else None
        yield ok(command.tag, f"{command.name} completed", code)

    def cmd_move(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 6851 §3.3: COPYUID untagged, then EXPUNGE responses, then OK."""
        view = self._view(session)
        if view.readonly:
            raise Refused("Folder is read-only", "READ-ONLY")
        ranges = self._ranges(view, command.args)
        target = self._target(command.args.folder)
        pairs = self._copy(view, ranges, target)
        if pairs:
            yield b"* OK [%s] Moved\r\n" % self._copyuid(target, pairs).encode()
            removed = self.store.remove(view.folder_id, ranges_of(src for src, _ in pairs))
            self.backend.notify([view.folder_id])
            yield from view.remove(removed)
        yield ok(command.tag, "MOVE completed")

    def _target(self, name: str) -> dict:
        try:
            return self.account.selectable(name)
        except Refused:
            raise Refused(f"No folder {name}", "TRYCREATE") from None

    def _copy(self, view: SelectedFolder, ranges, target: dict) -> list[tuple[int, int]]:
        known = ranges_of(u for a, b in ranges for u in _known_between(view, a, b))
        if not known:
            return []
        pairs = self.store.copy(view.folder_id, known, target)
        self.backend.notify([target["_id"]])
        return pairs

    def _copyuid(self, target: dict, pairs: list[tuple[int, int]]) -> str:
        return "COPYUID %d %s %s" % (
            target["uidvalidity"], sequence_text([s for s, _ in pairs]), sequence_text([d for _, d in pairs])
        )

    def cmd_expunge(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """EXPUNGE (RFC 3501 §6.4.3) and UID EXPUNGE (RFC 4315 §2.1)."""
        view = self._view(session)
        if view.readonly:
            raise Refused("Folder is read-only", "READ-ONLY")
        ranges = None
        if command.args is not None:
            ranges = view.uid_ranges(command.args.sequence, True)
            if not ranges:
                yield ok(command.tag, "EXPUNGE completed")
                return
        removed = self.store.expunge(view.folder_id, ranges)
        if removed:
            self.backend.notify([view.folder_id])
        yield from view.remove(removed)
        yield ok(command.tag, "EXPUNGE completed")

    # ------------------------------------------------------------------ SEARCH / SORT / THREAD
    def _search(self, view: SelectedFolder, key: SearchKey, charset) -> list[int]:
        if charset is not None and charset.upper() not in CHARSETS:
            raise Refused(f"Unsupported charset {charset}", "BADCHARSET (US-ASCII UTF-8)")
        context = imap_search.SearchContext(uids=view.uids, recent=frozenset(view.recent))
        try:
            plan = imap_search.compile_search(key, context)
            if not plan.needs_raw and plan.projection is not None and set(plan.projection) <= INDEXED_FIELDS:
                # Flags, UIDs, numbers, sizes, dates: answered from the folder index.
                snapshot = self.backend.index.snapshot(view.folder_id, view.uidvalidity, view.modseq, view.uid_limit)
                return [u for u in view.uids if view.known(u) and u in snapshot.messages and plan.matches(snapshot.messages[u])]
            uids = imap_search.search(self.store.find_where, view.folder_id, key, context, self.store.raw)
        except imap_search.SearchError as exc:
            raise BadArguments(str(exc)) from None
        return [u for u in uids if view.known(u)]

    def cmd_search(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.4.4, ESEARCH results (RFC 4731), MODSEQ (RFC 7162 §3.1.5)."""
        view = self._view(session)
        args = command.args
        uids = self._search(view, args.key, args.charset)
        numbers = uids if args.uid else [view.msn(u) or 0 for u in uids]
        modseq_suffix = b""
        if _uses_modseq(args.key) and uids:
            view.condstore = True
            highest = max(d.get("modseq", 0) for d in self.store.find(view.folder_id, ranges_of(uids), {"uid": 1, "modseq": 1}))
            modseq_suffix = b" (MODSEQ %d)" % highest
        if args.return_options is not None:
            yield self._esearch(command.tag, args.uid, numbers, args.return_options)
        else:
            yield b"* SEARCH%s%s\r\n" % (b"".join(b" %d" % n for n in numbers), modseq_suffix)
        yield ok(command.tag, "SEARCH completed")

    def _esearch(self, tag: str, by_uid: bool, numbers: list[int], options: Sequence[str]) -> bytes:
        """RFC 4731 §3.1: ``RETURN ()`` means ALL."""
        wanted = [o.upper() for o in options] or ["ALL"]
        parts = [b'* ESEARCH (TAG "%s")' % tag.encode()]
        if by_uid:
            parts.append(b"UID")
        if numbers:
            if "MIN" in wanted:
                parts.append(b"MIN %d" % min(numbers))
            if "MAX" in wanted:
                parts.append(b"MAX %d" % max(numbers))
            if "ALL" in wanted:
                parts.append(b"ALL " + uid_set(numbers).encode())
        if "COUNT" in wanted:
            parts.append(b"COUNT %d" % len(numbers))
        return b" ".join(parts) + b"\r\n"

    def cmd_sort(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 5256 SORT."""
        view = self._view(session)
        args = command.args
        uids = self._search(view, args.key, args.charset)
        docs = list(self.store.find(view.folder_id, ranges_of(uids), SORT_FIELDS)) if uids else []
        wanted = set(uids)
        try:
            ordered = imap_sort.sort_uids([d for d in docs if d["uid"] in wanted], args.criteria)
        except ValueError as exc:  # an unknown sort key
            raise BadArguments(str(exc)) from None
        numbers = ordered if args.uid else [view.msn(u) or 0 for u in ordered]
        yield b"* SORT%s\r\n" % b"".join(b" %d" % n for n in numbers)
        yield ok(command.tag, "SORT completed")

    def cmd_thread(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 5256 THREAD=ORDEREDSUBJECT and THREAD=REFERENCES."""
        view = self._view(session)
        args = command.args
        algorithm = args.algorithm.upper()
        if algorithm not in ("ORDEREDSUBJECT", "REFERENCES"):
            yield bad(command.tag, f"Unsupported threading algorithm {algorithm}")
            return
        uids = self._search(view, args.key, args.charset)
        wanted = set(uids)
        docs = [d for d in self.store.find(view.folder_id, ranges_of(uids), SORT_FIELDS) if d["uid"] in wanted] if uids else []
        tree = imap_sort.thread(docs, algorithm)
        number = (lambda uid: uid) if args.uid else (lambda uid: view.msn(uid) or 0)
        rendered = imap_sort.render_thread(tree, number)
        yield b"* THREAD" + (b" " + rendered if rendered else b"") + b"\r\n"  # RFC 5256 §4
        yield ok(command.tag, "THREAD completed")


def _raw_batches(docs: list[dict], attributes: list[FetchAttribute]) -> Iterator[list[dict]]:
    """Messages in groups whose bytes are read with one query (bounded in count and size)."""
    batch: list[dict] = []
    size = 0
    for doc in docs:
        batch.append(doc)
        size += doc.get("size", 0)
        if len(batch) >= RAW_BATCH_MESSAGES or size >= RAW_BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def _known_between(view: SelectedFolder, low: int, high: int) -> Iterator[int]:
    for uid in view.uids[bisect_left(view.uids, low) : bisect_right(view.uids, high)]:
        if uid not in view.held_expunges:
            yield uid


def _uses_modseq(key: SearchKey) -> bool:
    return key.name == "MODSEQ" or any(_uses_modseq(child) for child in key.children)
