"""A session's view of its selected folder (RFC 3501 §2.3.1.2, §5.5, §7.4.1).

Message sequence numbers are positions in ``uids``. Changes made elsewhere are
applied with :meth:`SelectedFolder.apply`, which returns the untagged responses
that tell the client: EXPUNGE (highest number first, so each number is right when
sent), EXISTS and RECENT for new messages, FETCH for new flags. While a FETCH,
STORE or SEARCH (not their UID forms) runs, expunges are held back, since the
client could not match numbers otherwise (RFC 3501 §7.4.1).
"""
from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional, Sequence

from mailappliance.protocol.imap.encode import flag_list
from mailappliance.protocol.imap.types import SequenceSet

RECENT = "\\Recent"


@dataclass
class FlagUpdate:
    uid: int
    flags: list[str]
    modseq: int


@dataclass
class SelectedFolder:
    folder_id: Any  # the storage's id (an ObjectId); opaque here
    name: str
    readonly: bool
    uidvalidity: int
    uids: list[int]
    modseq: int  # changes up to this modseq are reflected in the view
    uid_limit: int  # UIDs below this are known (UIDNEXT as the session knows it)
    recent: set[int] = field(default_factory=set)
    condstore: bool = False  # RFC 7162 §3.1: MODSEQ in unsolicited FETCH responses
    held_expunges: set[int] = field(default_factory=set)
    own_modseqs: set[int] = field(default_factory=set)  # changes this session already reported
    dirty: bool = True  # the folder may have changed since the last sync
    synced_at: float = 0.0  # time.monotonic() of the last sync

    def mark_dirty(self) -> None:
        self.dirty = True

    # ------------------------------------------------------------------ numbers
    @property
    def exists(self) -> int:
        return len(self.uids)

    def msn(self, uid: int) -> Optional[int]:
        i = bisect_left(self.uids, uid)
        return i + 1 if i < len(self.uids) and self.uids[i] == uid else None

    def uid_ranges(self, sequence: SequenceSet, by_uid: bool) -> list[tuple[int, int]]:
        """UID ranges of the messages a sequence set names (RFC 3501 §9 ``seq-number``)."""
        if not self.uids:
            return []
        if by_uid:
            first, last = self.uids[0], self.uids[-1]
            spans = sequence.resolve(last)
            return [(max(a, first), min(b, last)) for a, b in spans if b >= first and a <= last]
        result: list[tuple[int, int]] = []
        for a, b in sequence.resolve(len(self.uids)):
            a, b = max(a, 1), min(b, len(self.uids))
            if a > b:
                continue
            # Consecutive numbers map to an ascending run of UIDs: one range each.
            first, last = self.uids[a - 1], self.uids[b - 1]
            if result and first <= result[-1][1]:
                result[-1] = (result[-1][0], max(last, result[-1][1]))
            else:
                result.append((first, last))
        return result

    def valid_numbers(self, sequence: SequenceSet) -> bool:
        """RFC 3501 §9: a message number beyond EXISTS is an error; a range with ``*``
        is fine even when the folder is empty (``FETCH 1:*`` then matches nothing)."""
        largest = len(self.uids)
        return all(
            a is None or b is None or (a <= largest and b <= largest) for a, b in sequence.ranges
        )

    def known(self, uid: int) -> bool:
        return self.msn(uid) is not None and uid not in self.held_expunges

    def flags_with_recent(self, uid: int, flags: Iterable[str]) -> list[str]:
        flags = list(flags)
        if uid in self.recent:
            flags.append(RECENT)
        return flags

    # ------------------------------------------------------------------ updates
    def apply(
        self,
        new_messages: Sequence[dict],
        expunged: Iterable[int],
        uid_limit: int,
        modseq: int,
        recent: Iterable[int] = (),
        expunge_allowed: bool = True,
    ) -> list[bytes]:
        """Fold in what changed up to ``modseq``; return the untagged responses."""
        responses: list[bytes] = []
        known_last = self.uids[-1] if self.uids else 0
        gone = {uid for uid in expunged if self.msn(uid) is not None}
        self.held_expunges |= gone
        if expunge_allowed and self.held_expunges:
            responses += self._send_expunges()
        added = [m for m in new_messages if m["uid"] > known_last and m["uid"] < uid_limit]
        changed = [
            m for m in new_messages
            if m["uid"] <= known_last and self.known(m["uid"]) and m.get("modseq") not in self.own_modseqs
        ]
        for message in changed:
            responses.append(self.fetch_flags(message["uid"], message.get("flags", []), message.get("modseq")))
        if added:
            self.uids.extend(m["uid"] for m in added)
        self.recent |= set(recent)
        self.uid_limit = max(self.uid_limit, uid_limit)
        self.modseq = max(self.modseq, modseq)
        self.own_modseqs = {m for m in self.own_modseqs if m > self.modseq}
        if added:
            responses.append(b"* %d EXISTS\r\n" % len(self.uids))
            responses.append(b"* %d RECENT\r\n" % len(self.recent))
        return responses

    def release_expunges(self) -> list[bytes]:
        return self._send_expunges() if self.held_expunges else []

    def _send_expunges(self) -> list[bytes]:
        responses = []
        for uid in sorted(self.held_expunges, reverse=True):
            number = self.msn(uid)
            if number is None:
                continue
            del self.uids[number - 1]
            self.recent.discard(uid)
            responses.append(b"* %d EXPUNGE\r\n" % number)
        self.held_expunges.clear()
        return responses

    def remove(self, uids: Iterable[int]) -> list[bytes]:
        """This session's own expunge: EXPUNGE responses for ``uids`` (RFC 3501 §7.4.1)."""
        self.held_expunges |= {uid for uid in uids if self.msn(uid) is not None}
        return self._send_expunges()

    def fetch_flags(self, uid: int, flags: Sequence[str], modseq: Optional[int]) -> bytes:
        number = self.msn(uid)
        items = b"UID %d FLAGS %s" % (uid, flag_list(self.flags_with_recent(uid, flags)))
        if self.condstore and modseq is not None:
            items += b" MODSEQ (%d)" % modseq
        return b"* %d FETCH (%s)\r\n" % (number or 0, items)
