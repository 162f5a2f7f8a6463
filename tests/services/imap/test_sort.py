"""IMAP SORT and THREAD (RFC 5256): base subjects, sort keys, both threading algorithms."""
from datetime import datetime, timedelta, timezone

import pytest

from mailappliance.protocol.imap.types import SortCriterion
from mailappliance.services.imap.sort import (
    ThreadNode,
    base_subject,
    extract_base_subject,
    render_thread,
    sent_date,
    sort_uids,
    thread,
)
from mailappliance.services.mime import summarize

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=timezone.utc)


def doc(uid, subject="", date=None, arrived=None, size=100, frm=None, to=None, cc=None,
        message_id=None, references=None, in_reply_to=None):
    """A stored message as delivery writes it; ``date`` is the raw Date header."""
    d = {
        "uid": uid,
        "internal_date": arrived or T0 + timedelta(minutes=uid),
        "size": size,
        "envelope": {
            "date": date, "subject": subject,
            "from": [[None, None, *frm.split("@")]] if frm else [],
            "to": [[None, None, *a.split("@")] for a in (to or [])],
            "cc": [[None, None, *a.split("@")] for a in (cc or [])],
            "message_id": message_id, "in_reply_to": in_reply_to,
        },
    }
    if references is not None:
        d["references"] = references
    return d


@pytest.mark.parametrize(
    "subject, base, refwd",
    [
        ("hello", "hello", False),
        ("Re: hello", "hello", True),
        ("RE: Re: re:hello", "hello", True),
        ("Fwd: [list] Re: hello (fwd)", "hello", True),
        ("hello (fwd)  (FWD) ", "hello", True),
        ("[list] hello", "hello", False),
        ("[list] [other] Re: hello", "hello", True),
        ("[list]", "[list]", False),
        ("Re: [list]", "[list]", True),
        ("Re [2]: bar", "bar", True),
        ("Fw: x", "x", True),
        ("FWD : x", "x", True),
        ("[fwd: hello]", "hello", True),
        ("[Fwd: Re: hello (fwd)]", "hello", True),
        ("Re: [Fwd: [list] hello]", "hello", True),
        ("  hello \t  world \r\n ", "hello world", False),
        ("re:re", "re", True),
        ("Re:", "", True),
        ("Réponse: x", "Réponse: x", False),
        ("Rep: x", "Rep: x", False),
        ("", "", False),
    ],
)
def test_base_subject(subject, base, refwd):
    assert extract_base_subject(subject) == (base, refwd)


def test_base_subject_decodes_rfc2047():
    assert base_subject(doc(1, "=?utf-8?q?Re=3A_caf=C3=A9?=")) == "café"
    assert base_subject({"uid": 1, "subject": "Re: stored"}) == "stored", "no envelope: the decoded field"


def test_sent_date_in_utc_with_internal_date_fallback():
    assert sent_date(doc(1, date="Wed, 1 May 2024 09:00:00 -0500")) == datetime(2024, 5, 1, 14, 0, tzinfo=timezone.utc)
    assert sent_date(doc(1, date="1 May 2024 09:00 -0000")) == datetime(2024, 5, 1, 9, 0, tzinfo=timezone.utc)
    assert sent_date(doc(2, date="garbage")) == T0 + timedelta(minutes=2)
    assert sent_date(doc(3)) == T0 + timedelta(minutes=3)
    naive = doc(4)
    naive["internal_date"] = datetime(2024, 1, 1)  # as pymongo returns without tz_aware
    assert sent_date(naive) == datetime(2024, 1, 1, tzinfo=timezone.utc)


def C(key, reverse=False):
    return SortCriterion(key, reverse)


def test_sort_keys():
    docs = [
        doc(1, "b", date="Wed, 1 May 2024 10:00:00 +0000", arrived=T0 + timedelta(hours=3), size=300,
            frm="Zed@x.example", to=["bob@b"], cc=["carol@c"]),
        doc(2, "Re: A", date="Wed, 1 May 2024 10:00:00 +0200", arrived=T0 + timedelta(hours=1), size=100,
            frm="amy@x.example", to=["Alice@a"]),
        doc(3, "[list] a", date="not a date", arrived=T0 - timedelta(days=1), size=200,
            frm="bea@x.example", to=["alice@z"], cc=["Bert@c"]),
        doc(4, "c", arrived=T0 + timedelta(hours=2), size=100, frm="amy@y.example", cc=["aaron@c", "zed@c"]),
    ]
    assert sort_uids(docs, [C("ARRIVAL")]) == [3, 2, 4, 1]
    assert sort_uids(docs, [C("ARRIVAL", True)]) == [1, 4, 2, 3]
    # DATE: 2 was sent 08:00 UTC; 3 falls back to its internal date; 4 has no Date.
    assert sort_uids(docs, [C("DATE")]) == [3, 2, 1, 4]
    assert sort_uids(docs, [C("SIZE")]) == [2, 4, 3, 1], "ties keep sequence order"
    assert sort_uids(docs, [C("SIZE", True)]) == [1, 3, 2, 4], "REVERSE does not reverse ties"
    # FROM, TO, CC: the local part of the first address, i;ascii-casemap; none sorts first.
    assert sort_uids(docs, [C("FROM")]) == [2, 4, 3, 1]
    assert sort_uids(docs, [C("TO")]) == [4, 2, 3, 1]
    assert sort_uids(docs, [C("CC")]) == [2, 4, 3, 1]
    assert sort_uids(docs, [C("SUBJECT")]) == [2, 3, 1, 4]
    # RFC 5256 §5 style: SUBJECT, then REVERSE DATE within a subject.
    assert sort_uids(docs, [C("SUBJECT"), C("DATE", True)]) == [2, 3, 1, 4]
    assert sort_uids(docs, [C("FROM"), C("ARRIVAL", True)]) == [4, 2, 3, 1]
    assert sort_uids(docs, [C("SIZE"), C("SUBJECT", True)]) == [4, 2, 3, 1]
    assert sort_uids([], [C("DATE")]) == []
    with pytest.raises(ValueError):
        sort_uids(docs, [C("COLOR")])


def test_sort_subject_is_case_insensitive_for_ascii_only():
    docs = [doc(1, "b"), doc(2, "B"), doc(3, "a"), doc(4, "É"), doc(5, "é"), doc(6, "Z")]
    assert sort_uids(docs, [C("SUBJECT")]) == [3, 1, 2, 6, 4, 5]


# ---------------------------------------------------------------- THREAD


def shapes(tree):
    return [node.shape() for node in tree]


def test_render_rfc5256_example():
    """RFC 5256 §4: ``(2)(3 6 (4 23)(44 7 96))``."""
    def n(uid, *children):
        return ThreadNode(uid, list(children))

    tree = [n(2), n(3, n(6, n(4, n(23)), n(44, n(7, n(96)))))]
    assert render_thread(tree) == b"(2)(3 6 (4 23)(44 7 96))"
    assert render_thread(tree, lambda uid: uid * 10) == b"(20)(30 60 (40 230)(440 70 960))"
    dummy = [ThreadNode(None, [n(3), n(5, n(6))]), n(7, ThreadNode(None, [n(8), n(9)]))]
    assert render_thread(dummy) == b"((3)(5 6))(7 (8)(9))"
    assert render_thread([]) == b""


def test_orderedsubject():
    d = lambda h: f"Wed, 1 May 2024 {h:02d}:00:00 +0000"  # noqa: E731
    docs = [
        doc(1, "hello", d(1)), doc(2, "Re: hello", d(3)), doc(3, "other", d(2)),
        doc(4, "RE: HELLO", d(4)), doc(5, "[list] Other", d(0)), doc(6, "third", d(5)),
        doc(7, "Fwd: third", d(6)),
    ]
    tree = thread(docs, "ORDEREDSUBJECT")
    assert render_thread(tree) == b"(5 3)(1 (2)(4))(6 7)"


def test_references_reply_chains():
    d = lambda h: f"Wed, 1 May 2024 {h:02d}:00:00 +0000"  # noqa: E731
    docs = [
        doc(1, "topic", d(1), message_id="<a@x>"),
        doc(2, "Re: topic", d(2), message_id="<b@x>", references=["<a@x>"]),
        doc(3, "Re: topic", d(3), message_id="<c@x>", references=["<a@x>", "<b@x>"]),
        doc(4, "Re: topic", d(4), message_id="<d@x>", references=["<a@x>"]),
        doc(5, "unrelated", d(5), message_id="<e@x>"),
        doc(6, "Re: lost", d(6), message_id="<f@x>", references=["<x@x>", "<y@x>"]),
        doc(7, "Re: lost", d(7), message_id="<g@x>", references=["<x@x>"]),
    ]
    tree = thread(docs, "REFERENCES")
    assert render_thread(tree) == b"(1 (2 3)(4))(5)((6)(7))"
    assert render_thread(tree, {1: 11, 2: 12, 3: 13, 4: 14, 5: 15, 6: 16, 7: 17}.__getitem__) == (
        b"(11 (12 13)(14))(15)((16)(17))"
    )


def test_references_from_delivered_messages():
    """Documents as delivery stores them (mime.summarize), In-Reply-To only on the reply."""
    raws = [
        b"Message-ID: <p@x>\r\nSubject: plan\r\nDate: Wed, 1 May 2024 10:00:00 +0000\r\n\r\nbody\r\n",
        b"Message-ID: <q@x>\r\nSubject: Re: plan\r\nIn-Reply-To: <p@x>\r\nDate: Wed, 1 May 2024 11:00:00 +0000\r\n\r\nok\r\n",
        b"Message-ID: <r@x>\r\nSubject: Re: plan\r\nReferences: <p@x>\r\n <q@x>\r\n"
        b"Date: Wed, 1 May 2024 09:00:00 -0500\r\n\r\nfine\r\n",
    ]
    docs = []
    for uid, raw in enumerate(raws, 1):
        s = summarize(raw)
        docs.append({"uid": uid, "internal_date": T0, "size": len(raw), "envelope": s.envelope,
                     "subject": s.subject, "references": s.references})
    assert render_thread(thread(docs, "REFERENCES")) == b"(1 2 3)"
    del docs[2]["references"]  # documents stored before References was kept
    docs[2]["envelope"]["in_reply_to"] = "<q@x>"
    assert render_thread(thread(docs, "REFERENCES")) == b"(1 2 3)"


def test_references_forward_reference_duplicates_and_loops():
    d = lambda h: f"Wed, 1 May 2024 {h:02d}:00:00 +0000"  # noqa: E731
    # 1 replies to a message that arrives later in the folder; 3 repeats 2's Message-ID.
    docs = [
        doc(1, "Re: early", d(2), message_id="<reply@x>", references=["<orig@x>"]),
        doc(2, "early", d(1), message_id="<orig@x>"),
        doc(3, "copy", d(3), message_id="<orig@x>"),
        doc(4, "Re: early", d(4), message_id="<more@x>", references=["<orig@x>"]),
    ]
    assert render_thread(thread(docs, "REFERENCES")) == b"(2 (1)(4))(3)"
    # Two messages that reference each other, and one that references itself.
    looped = [
        doc(1, "a", d(1), message_id="<l1@x>", references=["<l2@x>"]),
        doc(2, "b", d(2), message_id="<l2@x>", references=["<l1@x>"]),
        doc(3, "c", d(3), message_id="<l3@x>", references=["<l3@x>"]),
    ]
    tree = thread(looped, "REFERENCES")
    assert sorted(render_thread(tree).decode().replace("(", " ").replace(")", " ").split()) == ["1", "2", "3"]
    assert render_thread(tree) in (b"(1 2)(3)", b"(2 1)(3)")


def test_references_dummies_are_pruned():
    d = lambda h: f"Wed, 1 May 2024 {h:02d}:00:00 +0000"  # noqa: E731
    docs = [
        # A missing parent with one child: the child heads the thread.
        doc(1, "Re: one", d(1), message_id="<1@x>", references=["<gone@x>"]),
        # A missing message between a present parent and child: the child moves up.
        doc(2, "two", d(2), message_id="<2@x>"),
        doc(3, "Re: two", d(3), message_id="<3@x>", references=["<2@x>", "<gone2@x>"]),
        doc(4, "Re: two", d(4), message_id="<4@x>", references=["<2@x>", "<gone2@x>"]),
    ]
    assert render_thread(thread(docs, "REFERENCES")) == b"(1)(2 (3)(4))"


def test_references_subject_merging():
    d = lambda h: f"Wed, 1 May 2024 {h:02d}:00:00 +0000"  # noqa: E731
    # A reply without references joins the original of the same base subject.
    docs = [doc(1, "news", d(1), message_id="<n1@x>"), doc(2, "Re: News", d(2), message_id="<n2@x>")]
    assert render_thread(thread(docs, "REFERENCES")) == b"(1 2)"
    # Two originals of the same subject go under a new dummy.
    docs = [doc(1, "news", d(1), message_id="<n1@x>"), doc(2, "news", d(2), message_id="<n2@x>")]
    assert render_thread(thread(docs, "REFERENCES")) == b"((1)(2))"
    # A reply seen first gives way to the original in the subject table.
    docs = [doc(1, "Re: news", d(1), message_id="<n1@x>"), doc(2, "news", d(2), message_id="<n2@x>")]
    assert render_thread(thread(docs, "REFERENCES")) == b"(2 1)"
    # A dummy thread takes the other messages of its subject, and two dummies merge.
    docs = [
        doc(1, "Re: lost", d(1), message_id="<m1@x>", references=["<lost@x>"]),
        doc(2, "Re: lost", d(2), message_id="<m2@x>", references=["<lost@x>"]),
        doc(3, "lost", d(3), message_id="<m3@x>"),
        doc(4, "Re: lost", d(4), message_id="<m4@x>", references=["<lost2@x>"]),
        doc(5, "Re: lost", d(5), message_id="<m5@x>", references=["<lost2@x>"]),
        doc(6, "", d(6), message_id="<m6@x>"),
        doc(7, "", d(7), message_id="<m7@x>"),
    ]
    assert render_thread(thread(docs, "REFERENCES")) == b"((1)(2)(3)(4)(5))(6)(7)"


def test_deep_chains_do_not_recurse():
    n = 3000
    docs = [doc(1, "deep", message_id="<0@x>")] + [
        doc(i + 1, "Re: deep", message_id=f"<{i}@x>", references=[f"<{i - 1}@x>"]) for i in range(1, n)
    ]
    tree = thread(docs, "REFERENCES")
    assert render_thread(tree) == ("(" + " ".join(str(i) for i in range(1, n + 1)) + ")").encode()
    assert render_thread(thread(docs, "ORDEREDSUBJECT")).startswith(b"(1 (2)(3)")


def test_unknown_algorithm():
    with pytest.raises(ValueError):
        thread([], "X-CLEVER")
    assert thread([], "REFERENCES") == [] and thread([], "orderedsubject") == []


def test_hostile_subjects_cost_little():
    import time

    started = time.perf_counter()
    assert extract_base_subject("Re: " * 250_000 + "x") == ("", True)  # cut before the "x"
    assert extract_base_subject("a" + " " * 100_000 + "(fwd)" * 1000)[0] == "a"
    assert time.perf_counter() - started < 1.0
