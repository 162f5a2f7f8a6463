"""One logged-in IMAP account: folder commands and the selected folder's state.

RFC 3501 §6.3 (SELECT … APPEND), RFC 6154 (SPECIAL-USE), RFC 5258 (LIST
options), RFC 4315 (UIDPLUS), RFC 7162 (CONDSTORE). Message commands (FETCH,
STORE, SEARCH …) live in ``messages.py``; both answer with response lines.
"""
from __future__ import annotations

import logging
import re
import time
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Iterator, Optional

from mailappliance.protocol.imap import encode
from mailappliance.protocol.imap.selected import SelectedFolder
from mailappliance.protocol.imap.session import ImapSession, Refused, ok
from mailappliance.protocol.imap.types import Command
from mailappliance.protocol.imap.utf7 import encode as utf7_encode
from mailappliance.services.imap.messages import MessageCommands
from mailappliance.storage.folders import HIERARCHY_DELIMITER, INBOX, FolderExists, visible_limits

if TYPE_CHECKING:
    from mailappliance.services.imap.backend import ImapBackend

log = logging.getLogger("mailappliance.imap")

MAX_FOLDER_NAME = 255  # characters
MAX_FOLDER_DEPTH = 20
MAX_FOLDERS = 1000  # per account
RESYNC_SECONDS = 5.0  # a selected folder is read again at least this often, watched or not
SYSTEM_FLAGS = ("\\Answered", "\\Flagged", "\\Deleted", "\\Seen", "\\Draft")


def folder_key(name: str) -> str:
    """INBOX is case-insensitive (RFC 3501 §5.1), also as the first level of a
    hierarchy (``inbox/sub`` is ``INBOX/sub``); other names are exact."""
    head, sep, rest = name.partition(HIERARCHY_DELIMITER)
    return INBOX + sep + rest if head.upper() == INBOX else name


def check_new_name(name: str) -> None:
    if not name or len(name) > MAX_FOLDER_NAME:
        raise Refused("Folder name is empty or too long", "CANNOT")
    parts = name.split(HIERARCHY_DELIMITER)
    if any(not p for p in parts) or len(parts) > MAX_FOLDER_DEPTH:
        raise Refused("Folder name has an empty level or is too deep", "CANNOT")
    if any(c in name for c in "*%\r\n\x00") or any(ord(c) < 0x20 for c in name):
        raise Refused("Folder name contains a forbidden character", "CANNOT")


def pattern_regex(reference: str, pattern: str) -> re.Pattern:
    """LIST wildcards (RFC 3501 §6.3.8): ``*`` matches anything, ``%`` stops at "/"."""
    full = reference + pattern if not pattern.startswith(HIERARCHY_DELIMITER) else pattern
    out = []
    for char in full:
        if char == "*":
            out.append(".*")
        elif char == "%":
            out.append("[^/]*")
        else:
            out.append(re.escape(char))
    regex = "".join(out)
    if full.upper().startswith("INBOX"):
        regex = "(?i:INBOX)" + "".join(out[5:])
    return re.compile(regex + r"\Z", re.DOTALL)


class ImapAccount:
    def __init__(self, backend: "ImapBackend", address: str) -> None:
        self.backend = backend
        self.address = address
        self.folders = backend.folders
        self.store = backend.messages
        self.messages = MessageCommands(self)
        self._watched: Optional[SelectedFolder] = None

    # ------------------------------------------------------------------ dispatch
    def handle(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        method = getattr(self, "cmd_" + command.name.lower(), None) or getattr(
            self.messages, "cmd_" + command.name.lower()
        )
        return method(session, command)

    def logout(self) -> None:
        self._watch(None)
        self.backend.logged_out(self)

    def _watch(self, view: Optional[SelectedFolder]) -> None:
        """Have the folder watch mark ``view`` dirty when its folder changes."""
        if view is self._watched:
            return
        if self._watched is not None:
            self.backend.watch.remove(self._watched.folder_id, self._watched.mark_dirty)
        self._watched = view
        if view is not None:
            self.backend.watch.add(view.folder_id, view.mark_dirty)

    def folder(self, name: str) -> dict:
        doc = self.folders.get(self.address, folder_key(name))
        if doc is None:
            raise Refused(f"No folder {name}", "NONEXISTENT")
        return doc

    def selectable(self, name: str) -> dict:
        doc = self.folder(name)
        if doc.get("noselect"):
            raise Refused(f"{name} cannot hold messages", "NONEXISTENT")
        return doc

    # ------------------------------------------------------------------ SELECT / EXAMINE / CLOSE
    def cmd_select(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.1-2; CONDSTORE per RFC 7162 §3.1.8."""
        args = command.args
        readonly = args.readonly or command.name == "EXAMINE"
        if session.selected is not None:
            session.unselect()  # RFC 3501: a failed SELECT leaves no folder selected
            yield b"* OK [CLOSED] Previous folder closed\r\n"
        doc = self.selectable(args.folder)
        limits = visible_limits(doc)
        snapshot = self.backend.index.snapshot(doc["_id"], doc["uidvalidity"], limits.modseq_limit, limits.uid_limit)
        view = SelectedFolder(
            folder_id=doc["_id"], name=doc["name"], readonly=readonly, uidvalidity=doc["uidvalidity"],
            uids=list(snapshot.uids), modseq=snapshot.modseq, uid_limit=snapshot.uid_limit,
            condstore=args.condstore,
        )
        view.recent = self._claim_recent(doc, view, view.uid_limit)
        session.select(view)
        if args.condstore:
            session.enabled.add("CONDSTORE")
        keywords = self._keywords(doc)
        flags = b" ".join([f.encode() for f in SYSTEM_FLAGS] + [k.encode() for k in keywords])
        yield b"* FLAGS (%s)\r\n" % flags
        yield b"* %d EXISTS\r\n" % view.exists
        yield b"* %d RECENT\r\n" % len(view.recent)
        first_unseen_uid = snapshot.first_unseen() if doc.get("unseen") else None
        first_unseen = view.msn(first_unseen_uid) if first_unseen_uid is not None else None
        if first_unseen:
            yield b"* OK [UNSEEN %d] First unseen message\r\n" % first_unseen
        yield b"* OK [UIDVALIDITY %d] UIDs valid\r\n" % view.uidvalidity
        yield b"* OK [UIDNEXT %d] Predicted next UID\r\n" % view.uid_limit
        if readonly:
            yield b"* OK [PERMANENTFLAGS ()] Read-only folder\r\n"
        else:
            yield b"* OK [PERMANENTFLAGS (%s \\*)] Flags permitted\r\n" % flags
        yield b"* OK [HIGHESTMODSEQ %d] Highest\r\n" % view.modseq
        code = "READ-ONLY" if readonly else "READ-WRITE"
        yield ok(command.tag, f"{command.name} completed", code)

    cmd_examine = cmd_select

    def _keywords(self, doc: dict) -> list[str]:
        return [k for k in doc.get("keywords", []) if k not in SYSTEM_FLAGS]

    def _claim_recent(self, doc: dict, view: SelectedFolder, up_to: int) -> set[int]:
        """RFC 3501 §2.3.2: the first read-write session to see a message reports it \\Recent."""
        previous = doc.get("recent_uid")
        start = previous or 1
        if start >= up_to:
            return set()
        if view.readonly:
            return {uid for uid in view.uids if uid >= start}
        if self.folders.claim_recent(doc["_id"], previous, up_to):
            return {uid for uid in view.uids if start <= uid < up_to}
        return set()

    def sync(self, view: SelectedFolder, expunge_allowed: bool) -> list[bytes]:
        """Report what changed in the selected folder since the view was last brought up to date.

        The folder is read again only when the watch said it changed (at once for
        this process, within a poll for others) or ``RESYNC_SECONDS`` have passed, so
        most commands cost no extra round trip.
        """
        self._watch(view)
        now = time.monotonic()
        if not view.dirty and now - view.synced_at < RESYNC_SECONDS:
            return view.release_expunges() if expunge_allowed else []
        view.dirty = False  # before reading: a change signalled meanwhile marks it again
        view.synced_at = now
        doc = self.folders.by_id(view.folder_id, {"uidnext": 1, "highestmodseq": 1, "pending": 1, "recent_uid": 1})
        if doc is None:
            raise Refused("The selected folder was deleted", "CLOSED")
        limits = visible_limits(doc)
        if limits.stale_tokens:
            self.folders.drop_stale(view.folder_id, limits.stale_tokens)
        responses = view.release_expunges() if expunge_allowed else []
        if limits.modseq_limit <= view.modseq and limits.uid_limit <= view.uid_limit:
            return responses
        changes = self.store.changes(view.folder_id, view.modseq, limits.modseq_limit)
        known_last = view.uids[-1] if view.uids else 0
        new_uids = [m["uid"] for m in changes.messages if known_last < m["uid"] < limits.uid_limit]
        recent: set[int] = set()
        if new_uids and not view.readonly:
            previous = doc.get("recent_uid")
            if (previous or 1) <= new_uids[0] and self.folders.claim_recent(view.folder_id, previous, limits.uid_limit):
                recent = set(new_uids)
        return responses + view.apply(
            changes.messages, changes.expunged, limits.uid_limit, limits.modseq_limit, recent, expunge_allowed
        )

    def cmd_close(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.4.2: expunge silently (unless read-only), then leave the folder."""
        view = session.selected
        assert view is not None
        if not view.readonly:
            removed = self.store.expunge(view.folder_id)
            if removed:
                self.backend.notify([view.folder_id])
        session.unselect()
        yield ok(command.tag, "CLOSE completed")

    # ------------------------------------------------------------------ CREATE / DELETE / RENAME
    def cmd_create(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.3: superior names are created as needed; a trailing "/" is dropped."""
        name = folder_key(command.args.folder.rstrip(HIERARCHY_DELIMITER))
        check_new_name(name)
        if name == INBOX:
            raise Refused("INBOX always exists", "ALREADYEXISTS")
        existing = {f["name"]: f for f in self.folders.of_mailbox(self.address)}
        if len(existing) >= MAX_FOLDERS:
            raise Refused(f"At most {MAX_FOLDERS} folders", "LIMIT")
        self._create_parents(name, set(existing))
        doc = existing.get(name)
        if doc is not None:
            if not doc.get("noselect"):
                raise Refused(f"{name} already exists", "ALREADYEXISTS")
            self.folders.set_noselect(doc["_id"], False)
        else:
            try:
                self.folders.create(self.address, name)
            except FolderExists:
                raise Refused(f"{name} already exists", "ALREADYEXISTS") from None
        yield ok(command.tag, "CREATE completed")

    def _create_parents(self, name: str, existing: set[str]) -> None:
        """RFC 3501 §6.3.3: superior hierarchical names are created as needed."""
        parts = name.split(HIERARCHY_DELIMITER)
        for depth in range(1, len(parts)):
            parent = HIERARCHY_DELIMITER.join(parts[:depth])
            if parent not in existing:
                try:
                    self.folders.create(self.address, parent)
                except FolderExists:
                    pass  # made meanwhile by another session

    def cmd_delete(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.4: a folder with children loses its messages and becomes \\Noselect."""
        name = folder_key(command.args.folder)
        if name == INBOX:
            raise Refused("INBOX cannot be deleted", "CANNOT")
        doc = self.folder(name)
        children = [f for f in self.folders.of_mailbox(self.address) if f["name"].startswith(name + HIERARCHY_DELIMITER)]
        if session.selected is not None and session.selected.folder_id == doc["_id"]:
            session.unselect()
        if children:
            if doc.get("noselect"):
                raise Refused(f"{name} has children and holds no messages", "CANNOT")
            self.store.expunge_all(doc["_id"])
            self.folders.set_noselect(doc["_id"], True)
        else:
            self.store.remove_all(doc["_id"])
            self.folders.remove(doc["_id"])
            self.backend.index.forget(doc["_id"])
        self.backend.notify([doc["_id"]])
        yield ok(command.tag, "DELETE completed")

    def cmd_rename(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.5, including renaming children and the INBOX rule."""
        old, new = folder_key(command.args.old), folder_key(command.args.new.rstrip(HIERARCHY_DELIMITER))
        check_new_name(new)
        source = self.folder(old)
        if self.folders.get(self.address, new) is not None:
            raise Refused(f"{new} already exists", "ALREADYEXISTS")
        if new.startswith(old + HIERARCHY_DELIMITER):
            raise Refused("Cannot rename a folder into itself", "CANNOT")
        self._create_parents(new, {f["name"] for f in self.folders.of_mailbox(self.address)})
        if old == INBOX:
            # INBOX stays; its messages move to the new folder (RFC 3501 §6.3.5).
            target = self.folders.create(self.address, new)
            uids = self.store.uids(source["_id"], source["uidnext"])
            if uids:
                ranges = [(uids[0], uids[-1])]
                self.store.copy(source["_id"], ranges, target)
                self.store.remove(source["_id"], ranges)
                self.backend.notify([source["_id"], target["_id"]])
        else:
            try:
                self.folders.rename(self.address, old, new)
            except FolderExists as exc:
                raise Refused(f"{exc} already exists", "ALREADYEXISTS") from None
            if session.selected is not None and session.selected.folder_id == source["_id"]:
                session.selected.name = new
        yield ok(command.tag, "RENAME completed")

    def cmd_subscribe(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        name = folder_key(command.args.folder)
        if not self.folders.set_subscribed(self.address, name, True):
            raise Refused(f"No folder {name}", "NONEXISTENT")
        yield ok(command.tag, "SUBSCRIBE completed")

    def cmd_unsubscribe(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        name = folder_key(command.args.folder)
        self.folders.set_subscribed(self.address, name, False)  # RFC 3501 §6.3.7: fine if it is gone
        yield ok(command.tag, "UNSUBSCRIBE completed")

    # ------------------------------------------------------------------ LIST / LSUB / STATUS
    def cmd_list(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """LIST and LSUB (RFC 3501 §6.3.8-9), with RFC 5258/6154 options."""
        args = command.args
        verb = b"LSUB" if args.lsub else b"LIST"
        select = {o.upper() for o in args.select_options}
        returns = {o.upper() for o in args.return_options}
        if len(args.patterns) == 1 and args.patterns[0] == "":
            # RFC 3501 §6.3.8: the hierarchy delimiter and root name.
            yield b'* %s (\\Noselect) "/" ""\r\n' % verb
            yield ok(command.tag, f"{verb.decode()} completed")
            return
        folders = self.folders.of_mailbox(self.address)
        names = {f["name"] for f in folders}
        regexes = [pattern_regex(args.reference, p) for p in args.patterns]
        for doc in folders:
            name = doc["name"]
            if not any(r.match(name) for r in regexes):
                continue
            subscribed = doc.get("subscribed", True)
            if (args.lsub or "SUBSCRIBED" in select) and not subscribed:
                continue
            if "SPECIAL-USE" in select and not doc.get("special_use"):
                continue
            attributes = []
            if doc.get("noselect"):
                attributes.append("\\Noselect")
            has_children = any(n.startswith(name + HIERARCHY_DELIMITER) for n in names)
            if not args.lsub:
                attributes.append("\\HasChildren" if has_children else "\\HasNoChildren")
                if subscribed and ("SUBSCRIBED" in select or "SUBSCRIBED" in returns):
                    attributes.append("\\Subscribed")
                if doc.get("special_use") and (not select and not returns or "SPECIAL-USE" in select | returns):
                    attributes.append(doc["special_use"])
            line = b"* %s (%s) \"/\" %s\r\n" % (verb, " ".join(attributes).encode(), encode.astring(utf7_encode(name)))
            yield line
        yield ok(command.tag, f"{verb.decode()} completed")

    cmd_lsub = cmd_list

    def cmd_status(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.10 from the folder's counters (no message is counted)."""
        doc = self.selectable(command.args.folder)
        limits = visible_limits(doc)
        values = []
        for item in command.args.items:
            item = item.upper()
            if item == "MESSAGES":
                value = doc.get("messages", 0)
            elif item == "UIDNEXT":
                value = limits.uid_limit
            elif item == "UIDVALIDITY":
                value = doc["uidvalidity"]
            elif item == "UNSEEN":
                value = doc.get("unseen", 0)
            elif item == "HIGHESTMODSEQ":
                value = limits.modseq_limit
            elif item == "SIZE":
                value = doc.get("bytes", 0)
            elif item == "APPENDLIMIT":  # RFC 7889 §3
                value = session.config.max_message_size
            elif item == "RECENT":
                start = doc.get("recent_uid") or 1
                value = self.store.count_from(doc["_id"], start) if start < limits.uid_limit else 0
            else:
                raise Refused(f"Unknown status item {item}")
            values.append(f"{item} {value}")
        yield b"* STATUS %s (%s)\r\n" % (encode.astring(utf7_encode(doc["name"])), " ".join(values).encode())
        yield ok(command.tag, "STATUS completed")

    # ------------------------------------------------------------------ APPEND
    def cmd_append(self, session: ImapSession, command: Command) -> Iterator[bytes]:
        """RFC 3501 §6.3.11 with APPENDUID (RFC 4315 §3)."""
        args = command.args
        try:
            doc = self.selectable(args.folder)
        except Refused:
            raise Refused(f"No folder {args.folder}", "TRYCREATE") from None
        if len(args.message) > session.config.max_message_size:
            raise Refused(f"Message is larger than {session.config.max_message_size} bytes", "TOOBIG")
        if not args.message:
            raise Refused("Empty message", "CANNOT")
        self.backend.check_quota(self.address, len(args.message))
        when = args.internal_date or datetime.now(timezone.utc)
        uid = self.backend.append(self.address, doc, args.message, list(args.flags), when)
        self._remember_keywords(doc, args.flags)
        yield ok(command.tag, "APPEND completed", f"APPENDUID {doc['uidvalidity']} {uid}")

    def _remember_keywords(self, doc: dict, flags) -> None:
        new = [f for f in flags if not f.startswith("\\") and f not in doc.get("keywords", [])]
        if new:
            self.folders.add_keywords(doc["_id"], new)
