"""IMAP SEARCH (RFC 3501 §6.4.4): every key, against the real database.

Each program is checked three ways: :func:`search` returns exactly the expected UIDs,
the compiled query alone returns a superset of them (exactly them when the program
only uses keys the query can express), and ``matches`` on full documents agrees.
"""
import base64
from datetime import date, datetime, timezone

import pytest
from bson import ObjectId

from mailappliance.protocol.imap.types import SearchKey, SequenceSet
from mailappliance.services.imap.search import (
    SearchContext,
    SearchError,
    body_text,
    compile_search,
    render_addresses,
    search,
)
from mailappliance.services.mime import summarize


def K(name, value=None, *children):
    return SearchKey(name, value, tuple(children))


def AND(*children):
    return SearchKey("AND", children=tuple(children))


def OR(a, b):
    return SearchKey("OR", children=(a, b))


def NOT(a):
    return SearchKey("NOT", children=(a,))


def SEQ(text):
    ranges = []
    for part in text.split(","):
        first, _, last = part.partition(":")
        a = None if first == "*" else int(first)
        b = a if not last else (None if last == "*" else int(last))
        ranges.append((a, b))
    return SequenceSet(tuple(ranges))


def utc(*args):
    return datetime(*args, tzinfo=timezone.utc)


MESSAGES = {
    1: (
        b"From: Alice Example <alice@a.example>\r\n"
        b"To: bob@b.example\r\n"
        b"Subject: Hello world\r\n"
        b"Date: Fri, 1 Mar 2024 10:00:00 +0000\r\n"
        b"Message-ID: <one@a.example>\r\n"
        b"\r\n"
        b"first message body\r\n",
        ["\\Seen"], utc(2024, 3, 1, 12, 0), 10,
    ),
    2: (
        b"From: =?utf-8?b?Wm/Dqw==?= <zoe@z.example>\r\n"
        b"To: Bob <bob@b.example>\r\n"
        b"Cc: carol@c.example\r\n"
        b"Subject: =?utf-8?q?Caf=C3=A9_cr=C3=A8me?=\r\n"
        b"Date: Sun, 31 Mar 2024 23:30:00 -0500\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"Gr=C3=BC=C3=9Fe aus M=C3=BCnchen\r\n",
        ["\\Flagged", "$Label1"], utc(2024, 4, 1, 4, 30), 20,
    ),
    3: (
        b"From: bob@b.example\r\n"
        b"To: alice@a.example\r\n"
        b"Bcc: dave@d.example\r\n"
        b"Subject: Re: Hello world\r\n"
        b"Date: Tue, 2 Apr 2024 09:00:00 +0200\r\n"
        b"X-Priority: 1 (Highest)\r\n"
        b"In-Reply-To: <one@a.example>\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.encodebytes("Привет мир, hello".encode()).replace(b"\n", b"\r\n"),
        ["\\Answered", "\\Seen"], utc(2024, 4, 2, 0, 0), 30,
    ),
    5: (
        b"From: carol@c.example\r\n"
        b"To: alice@a.example, Bob <bob@b.example>\r\n"
        b"Subject: Report\r\n"
        b"X-Empty:\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=b1\r\n"
        b"\r\n"
        b"--b1\r\n"
        b"Content-Type: multipart/alternative; boundary=b2\r\n"
        b"\r\n"
        b"--b2\r\n"
        b"Content-Type: text/plain\r\n"
        b"\r\n"
        b"quarterly numbers\r\n"
        b"--b2\r\n"
        b"Content-Type: text/html; charset=utf-8\r\n"
        b"\r\n"
        b"<p>quarterly <b>numbers</b></p>\r\n"
        b"--b2--\r\n"
        b"--b1\r\n"
        b"Content-Type: application/octet-stream\r\n"
        b"Content-Transfer-Encoding: base64\r\n"
        b"\r\n" + base64.b64encode(b"secretword inside an attachment") + b"\r\n"
        b"--b1--\r\n",
        ["\\Deleted"], utc(2024, 4, 3, 23, 59, 59), 5000,
    ),
    8: (
        b"From: Dave <dave@d.example>\r\n"
        b"To: alice@a.example\r\n"
        b"Subject: STRASSE\r\n"
        b"Date: 10 Apr 2024 08:00 GMT\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n"
        b"\r\n" + "Die Straße ist nass\r\n".encode(),
        ["\\Draft", "$Label1"], utc(2024, 4, 10, 8, 0), 80,
    ),
    9: (
        b"From: eve@e.example\r\n"
        b"To: alice@a.example\r\n"
        b"Subject: menu\r\n"
        b"Date: not a date\r\n"
        b"Content-Type: text/plain; charset=iso-8859-1\r\n"
        b"Content-Transfer-Encoding: quoted-printable\r\n"
        b"\r\n"
        b"caf=E9 au lait\r\n",
        [], utc(2024, 4, 10, 9, 0), 90,
    ),
}
SESSION_UIDS = [1, 2, 3, 5, 8, 9]
RECENT = frozenset({8, 9})


def build_doc(folder, uid, raw, flags, when, modseq):
    s = summarize(raw)
    return {
        "_id": ObjectId(), "folder": folder, "uid": uid, "modseq": modseq, "flags": flags,
        "internal_date": when, "size": len(raw), "blob": ObjectId(), "subject": s.subject, "from": s.from_,
        "envelope": s.envelope, "structure": s.structure, "references": s.references,
    }


@pytest.fixture
def folder(collections):
    folder_id = ObjectId()
    docs = [build_doc(folder_id, uid, raw, flags, when, modseq) for uid, (raw, flags, when, modseq) in MESSAGES.items()]
    # Delivered after the session's snapshot, and a message in another folder: never found.
    docs.append(build_doc(folder_id, 10, MESSAGES[1][0], ["\\Seen"], utc(2024, 4, 11), 100))
    docs.append(build_doc(ObjectId(), 1, MESSAGES[1][0], ["\\Seen"], utc(2024, 3, 1), 1))
    collections.messages.insert_many(docs)
    return collections.messages, folder_id


class Loader:
    def __init__(self):
        self.reads = []

    def __call__(self, doc):
        self.reads.append(doc["uid"])
        return MESSAGES[doc["uid"]][0]


CTX = SearchContext(uids=SESSION_UIDS, recent=RECENT)

# (program, expected UIDs, the query alone is exact)
CASES = [
    (K("ALL"), [1, 2, 3, 5, 8, 9], True),
    (K("SEEN"), [1, 3], True),
    (K("UNSEEN"), [2, 5, 8, 9], True),
    (K("ANSWERED"), [3], True),
    (K("UNANSWERED"), [1, 2, 5, 8, 9], True),
    (K("DELETED"), [5], True),
    (K("UNDELETED"), [1, 2, 3, 8, 9], True),
    (K("DRAFT"), [8], True),
    (K("UNDRAFT"), [1, 2, 3, 5, 9], True),
    (K("FLAGGED"), [2], True),
    (K("UNFLAGGED"), [1, 3, 5, 8, 9], True),
    (K("KEYWORD", "$Label1"), [2, 8], True),
    (K("UNKEYWORD", "$Label1"), [1, 3, 5, 9], True),
    (K("KEYWORD", "$Absent"), [], True),
    (K("RECENT"), [8, 9], True),
    (K("NEW"), [8, 9], True),
    (K("OLD"), [1, 2, 3, 5], True),
    (AND(K("NEW"), K("KEYWORD", "$Label1")), [8], True),
    (K("LARGER", 400), [5], True),
    (K("LARGER", 494), [], True),
    (K("SMALLER", 190), [1, 9], True),
    (K("MODSEQ", 30), [3, 5, 8, 9], True),
    (K("MODSEQ", 0), [1, 2, 3, 5, 8, 9], True),
    # Internal dates, by calendar day in UTC.
    (K("BEFORE", date(2024, 4, 2)), [1, 2], True),
    (K("ON", date(2024, 4, 2)), [3], True),
    (K("ON", date(2024, 4, 3)), [5], True),
    (K("SINCE", date(2024, 4, 3)), [5, 8, 9], True),
    (K("SINCE", date(2030, 1, 1)), [], True),
    # Sent dates: the day written in the Date header, whatever its zone; 9 has none usable.
    (K("SENTON", date(2024, 3, 31)), [2], False),
    (K("SENTBEFORE", date(2024, 4, 1)), [1, 2], False),
    (K("SENTSINCE", date(2024, 4, 2)), [3, 8], False),
    (NOT(K("SENTSINCE", date(2024, 1, 1))), [5, 9], False),
    # Sequence numbers (msn 4 is UID 5) and UIDs, with '*'.
    (K("SEQSET", SEQ("2:4")), [2, 3, 5], True),
    (K("SEQSET", SEQ("5:*")), [8, 9], True),
    (K("SEQSET", SEQ("*")), [9], True),
    (K("SEQSET", SEQ("1,3,6")), [1, 3, 9], True),
    (K("SEQSET", SEQ("7:9")), [], True),
    (NOT(K("SEQSET", SEQ("2:5"))), [1, 9], True),
    (K("UID", SEQ("2:5")), [2, 3, 5], True),
    (K("UID", SEQ("4,6:7")), [], True),
    (K("UID", SEQ("9:*")), [9], True),
    (K("UID", SEQ("100:*")), [9], True),  # '*' is the highest UID, so 100:* is 9:100
    (K("UID", SEQ("*")), [9], True),
    # Addresses: decoded display names and addresses, case-insensitive.
    (K("FROM", "alice"), [1], False),
    (K("FROM", "ZOË"), [2], False),
    (K("FROM", "@c.example"), [5], False),
    (K("TO", "alice@a.example"), [3, 5, 8, 9], False),
    (K("TO", "Bob <bob@"), [2, 5], False),
    (K("CC", "carol"), [2], False),
    (K("BCC", "dave"), [3], False),
    (K("BCC", "nobody"), [], False),
    # Subjects, RFC 2047 decoded, Unicode case-folded.
    (K("SUBJECT", "hello"), [1, 3], False),
    (K("SUBJECT", "CAFÉ CRÈME"), [2], False),
    (K("SUBJECT", "straße"), [8], False),
    (K("SUBJECT", ""), [1, 2, 3, 5, 8, 9], False),
    # HEADER: envelope fields from the envelope, others from the raw header block.
    (K("HEADER", ("X-Priority", "highest")), [3], False),
    (K("HEADER", ("x-priority", "")), [3], False),
    (K("HEADER", ("X-Empty", "")), [5], False),
    (K("HEADER", ("X-Empty", "x")), [], False),
    (K("HEADER", ("Cc", "")), [2], False),
    (K("HEADER", ("Date", "")), [1, 2, 3, 8, 9], False),
    (K("HEADER", ("In-Reply-To", "one@a.example")), [3], False),
    (K("HEADER", ("Message-ID", "<one@")), [1], False),
    (K("HEADER", ("Subject", "café")), [2], False),
    (K("HEADER", ("From", "zoë")), [2], False),
    # BODY: decoded text parts only (not attachments, not headers).
    (K("BODY", "grüße aus"), [2], False),
    (K("BODY", "привет"), [3], False),
    (K("BODY", "QUARTERLY"), [5], False),
    (K("BODY", "<b>numbers"), [5], False),
    (K("BODY", "secretword"), [], False),
    (K("BODY", "strasse"), [8], False),
    (K("BODY", "café au"), [9], False),
    (K("BODY", "hello"), [3], False),
    # TEXT: header or body.
    (K("TEXT", "hello"), [1, 3], False),
    (K("TEXT", "x-priority"), [3], False),
    (K("TEXT", "zoë"), [2], False),
    (K("TEXT", "münchen"), [2], False),
    # Combinations.
    (AND(K("SEEN"), K("SUBJECT", "hello")), [1, 3], False),
    (AND(K("SEEN"), K("UNANSWERED")), [1], True),
    (OR(K("SEEN"), K("FLAGGED")), [1, 2, 3], True),
    (OR(K("DELETED"), K("BODY", "münchen")), [2, 5], False),
    (NOT(OR(K("SEEN"), K("FLAGGED"))), [5, 8, 9], True),
    (NOT(K("SUBJECT", "hello")), [2, 5, 8, 9], False),
    (NOT(NOT(K("DRAFT"))), [8], True),
    (NOT(K("ALL")), [], True),
    (OR(K("ALL"), K("BODY", "x")), [1, 2, 3, 5, 8, 9], False),
    (AND(K("UID", SEQ("1:5")), NOT(K("SEEN")), OR(K("FROM", "zoe"), K("HEADER", ("X-Empty", "")))), [2, 5], False),
    (OR(AND(K("SEEN"), K("LARGER", 200)), AND(K("UNSEEN"), K("SMALLER", 200))), [3, 8, 9], True),
    (OR(K("SEQSET", SEQ("1")), OR(K("UID", SEQ("9")), OR(K("KEYWORD", "$Label1"), K("ANSWERED")))), [1, 2, 3, 8, 9], True),
    (AND(AND(K("UNDELETED"), K("SINCE", date(2024, 4, 1))), NOT(K("TEXT", "lait"))), [2, 3, 8], False),
]


@pytest.mark.parametrize("program, expected, exact", CASES, ids=[str(i) for i in range(len(CASES))])
def test_program(folder, program, expected, exact):
    messages, folder_id = folder
    loader = Loader()
    assert search(messages.find, folder_id, program, CTX, loader) == expected

    plan = compile_search(program, CTX)
    candidates = sorted(d["uid"] for d in messages.find({"folder": folder_id, **plan.query}, plan.projection))
    assert set(expected) <= set(candidates), "the query is a superset"
    if exact:
        assert candidates == expected, "keys the query expresses are narrowed exactly"
        assert not plan.needs_raw and loader.reads == []
    full = [d for d in messages.find({"folder": folder_id}) if d["uid"] != 10]
    assert sorted(d["uid"] for d in full if plan.matches(d, MESSAGES[d["uid"]][0])) == expected


def test_flag_search_reads_no_text(folder):
    messages, folder_id = folder
    plan = compile_search(AND(K("UNSEEN"), K("UNDELETED"), K("KEYWORD", "$Label1")), CTX)
    assert plan.projection == {"_id": 0, "flags": 1, "uid": 1}
    assert plan.query["flags"] == {"$all": ["$Label1"], "$nin": ["\\Deleted", "\\Seen"]}
    assert plan.query["uid"] == {"$gte": 1, "$lte": 9}
    assert not plan.needs_raw


def test_raw_is_read_lazily_and_only_when_needed(folder):
    messages, folder_id = folder
    loader = Loader()
    # Only the unseen message that passes the cheap keys has its bytes read.
    assert search(messages.find, folder_id, AND(K("BODY", "münchen"), K("FLAGGED")), CTX, loader) == [2]
    assert loader.reads == [2]
    loader = Loader()
    assert search(messages.find, folder_id, K("SUBJECT", "menu"), CTX, loader) == [9]
    assert loader.reads == []
    plan = compile_search(K("HEADER", ("X-Priority", "1")), CTX)
    assert plan.needs_raw and plan.projection == {"_id": 0, "blob": 1, "size": 1, "uid": 1}


def test_messages_stored_without_envelope_are_searched_from_their_header():
    """Mail too complex to summarise at delivery is stored with an empty envelope."""
    raw = b"From: Zed <zed@z.example>\r\nSubject: =?utf-8?q?r=C3=A9sum=C3=A9?=\r\nDate: 2 May 2024 10:00 +0000\r\n\r\nbody\r\n"
    stored = {"uid": 1, "flags": [], "size": len(raw), "subject": "", "envelope": {}}
    ctx = SearchContext(uids=[1])
    for program in (K("FROM", "zed@z"), K("SUBJECT", "RÉSUMÉ"), K("HEADER", ("Subject", "")),
                     K("SENTON", date(2024, 5, 2))):
        plan = compile_search(program, ctx)
        assert "blob" in plan.projection and not plan.needs_raw
        assert plan.matches(stored, raw), program
        assert not plan.matches(stored, None), "without the bytes, nothing to match"
        assert plan.matches(build_doc(None, 1, raw, [], utc(2024, 5, 2), 1), None), "a normal document needs no bytes"


def test_empty_session_finds_nothing(folder):
    messages, folder_id = folder
    ctx = SearchContext(uids=[])
    assert search(messages.find, folder_id, K("ALL"), ctx, Loader()) == []
    assert search(messages.find, folder_id, K("SEQSET", SEQ("1:*")), ctx, Loader()) == []


def test_many_ranges_fall_back_to_a_span(folder):
    messages, folder_id = folder
    every_other = SequenceSet(tuple((n, n) for n in range(1, 400, 2)))
    plan = compile_search(K("UID", every_other), CTX)
    assert plan.query == {"uid": {"$gte": 1, "$lte": 9}}
    assert compile_search(K("UID", SEQ("3:5")), CTX).query == {"uid": {"$gte": 3, "$lte": 5}}
    assert compile_search(K("UID", SEQ("20:30")), SearchContext(uids=[1, 2])).query == {"uid": {"$in": []}}
    assert search(messages.find, folder_id, K("UID", every_other), CTX, Loader()) == [1, 3, 5, 9]
    assert search(messages.find, folder_id, NOT(K("UID", every_other)), CTX, Loader()) == [2, 8]


def test_long_or_chains_do_not_recurse():
    program = K("ALL")
    for n in range(3000):
        program = OR(K("UID", SEQ(str(n + 1))), program)
    plan = compile_search(program, CTX)
    assert plan.matches({"uid": 3, "flags": []})


def test_unknown_key_is_an_error():
    with pytest.raises(SearchError):
        compile_search(K("FUZZY", "x"), CTX)


def test_body_text_and_addresses():
    assert body_text(MESSAGES[2][0]) == "Grüße aus München\r\n"
    assert "secretword" not in body_text(MESSAGES[5][0])
    assert render_addresses([["=?utf-8?b?Wm/Dqw==?=", None, "zoe", "z.example"], [None, None, "bob", "b.example"]]) == (
        "Zoë <zoe@z.example>, bob@b.example"
    )


def test_naive_internal_dates_are_utc():
    plan = compile_search(K("ON", date(2024, 4, 2)), CTX)
    assert plan.matches({"uid": 3, "internal_date": datetime(2024, 4, 2, 23, 59)})
    assert not plan.matches({"uid": 3, "internal_date": datetime(2024, 4, 3, 0, 0)})
