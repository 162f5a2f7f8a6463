"""The selected-folder view: message numbers, UID ranges, and untagged updates (RFC 3501 §7.4.1)."""
from mailappliance.protocol.imap.selected import SelectedFolder
from mailappliance.protocol.imap.types import SequenceSet


def view(uids, **kw) -> SelectedFolder:
    return SelectedFolder(folder_id=1, name="INBOX", readonly=False, uidvalidity=7, uids=list(uids),
                          modseq=10, uid_limit=max(uids, default=0) + 1, **kw)


def test_message_numbers_map_to_uid_ranges():
    v = view([2, 4, 5, 9])
    assert v.uid_ranges(SequenceSet(((1, 2),)), by_uid=False) == [(2, 4)]
    assert v.uid_ranges(SequenceSet(((3, None),)), by_uid=False) == [(5, 9)]
    assert v.uid_ranges(SequenceSet(((1, 1), (4, 4))), by_uid=False) == [(2, 2), (9, 9)]
    assert v.uid_ranges(SequenceSet(((6, None),)), by_uid=True) == [(6, 9)]
    # RFC 3501 §6.4.8: "*" is the largest UID even when the range starts above it.
    assert v.uid_ranges(SequenceSet(((100, None),)), by_uid=True) == [(9, 9)]
    assert v.uid_ranges(SequenceSet(((100, 200),)), by_uid=True) == []
    assert v.msn(5) == 3 and v.msn(3) is None


def test_numbers_beyond_exists_are_invalid_but_star_is_fine():
    v = view([1, 2])
    assert v.valid_numbers(SequenceSet(((1, None),)))
    assert not v.valid_numbers(SequenceSet(((3, 3),)))


def test_expunges_are_sent_highest_first_and_numbers_stay_right():
    v = view([1, 2, 3, 4])
    out = v.apply([], expunged=[2, 4], uid_limit=5, modseq=11)
    assert out == [b"* 4 EXPUNGE\r\n", b"* 2 EXPUNGE\r\n"]
    assert v.uids == [1, 3]


def test_expunges_are_held_during_fetch_store_search():
    v = view([1, 2, 3])
    out = v.apply([], expunged=[1], uid_limit=4, modseq=11, expunge_allowed=False)
    assert out == [] and v.uids == [1, 2, 3] and not v.known(1)
    assert v.release_expunges() == [b"* 1 EXPUNGE\r\n"]
    assert v.uids == [2, 3]


def test_new_messages_give_exists_and_recent_and_flag_changes_give_fetch():
    v = view([1, 2])
    out = v.apply(
        [{"uid": 2, "flags": ["\\Seen"], "modseq": 12}, {"uid": 3, "flags": [], "modseq": 13}],
        expunged=[], uid_limit=4, modseq=13, recent=[3],
    )
    assert out == [b"* 2 FETCH (UID 2 FLAGS (\\Seen))\r\n", b"* 3 EXISTS\r\n", b"* 1 RECENT\r\n"]
    assert v.fetch_flags(3, [], 13) == b"* 3 FETCH (UID 3 FLAGS (\\Recent))\r\n"


def test_own_changes_are_not_reported_twice_and_condstore_adds_modseq():
    v = view([1], condstore=True)
    v.own_modseqs.add(12)
    assert v.apply([{"uid": 1, "flags": [], "modseq": 12}], [], 2, 12) == []
    assert v.apply([{"uid": 1, "flags": ["a"], "modseq": 14}], [], 2, 14) == [b"* 1 FETCH (UID 1 FLAGS (a) MODSEQ (14))\r\n"]


def test_new_uids_at_or_above_the_visible_limit_wait():
    v = view([1])
    out = v.apply([{"uid": 2, "flags": [], "modseq": 11}, {"uid": 5, "flags": [], "modseq": 12}], [], uid_limit=3, modseq=12)
    assert v.uids == [1, 2] and out[0] == b"* 2 EXISTS\r\n"
