"""Body sections located in raw bytes (RFC 3501 §6.4.5), malformed MIME included."""
import pytest

from mailappliance.protocol.imap.sections import count_lines, header_fields, locate, section_bytes
from mailappliance.protocol.imap.types import Section
from mailappliance.services.mime import summarize
from tests.protocol.imap.test_bodystructure import ALTERNATIVE, MIXED, NESTED, PLAIN, crlf

BARE_LF = (
    b"From: x@example.com\nSubject: lf\nContent-Type: multipart/mixed; boundary=q\n\n"
    b"--q\nContent-Type: text/plain\n\none\ntwo\n--q\n\nno header part\n--q--\n"
)
UNCLOSED = crlf(
    "Content-Type: multipart/mixed; boundary=xyz\nSubject: truncated\n\n"
    "--xyz\nContent-Type: text/plain\n\nfirst\n--xyz\nContent-Type: text/plain\n\nsecond, never closed\n"
)
NO_BLANK_LINE = b"From: a@example.com\r\nSubject: no blank\r\nThis line is body\r\n"
BAD_BOUNDARY = crlf("Content-Type: multipart/mixed; boundary=nothere\n\n--other\n\ntext\n--other--\n")
DOUBLE_DELIMITERS = crlf(
    "Content-Type: multipart/mixed; boundary=b\n\n--b\n--b  \nContent-Type: text/plain\n\nA\n--b\n\nB\n--b--\n"
)
DIGEST = crlf(
    "Content-Type: multipart/digest; boundary=d\n\n--d\n\nSubject: one\n\n1\n--d\n\nSubject: two\n\n2\n--d--\n"
)
INNER_UNCLOSED = crlf(
    "Content-Type: multipart/mixed; boundary=outer\n\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n"
    "--inner\nContent-Type: text/plain\n\nx\n\n--outer \nContent-Type: message/rfc822\n\nSubject: s\n\nbody\n\n\n"
    "--outer--\n"
)
SAMPLES = [
    PLAIN, ALTERNATIVE, MIXED, NESTED, BARE_LF, UNCLOSED, NO_BLANK_LINE, BAD_BOUNDARY, DOUBLE_DELIMITERS, DIGEST,
    INNER_UNCLOSED,
]


def body(raw: bytes, *part: int, text=None, fields=()) -> object:
    return section_bytes(raw, Section(part=tuple(part), text=text, fields=tuple(fields)))


def test_whole_message_header_and_text_are_byte_exact():
    for raw in SAMPLES:
        assert body(raw) == raw
        assert body(raw, text="HEADER") + body(raw, text="TEXT") == raw


def test_part_one_of_a_non_multipart_message_is_its_body():
    assert body(PLAIN, 1) == b"Hello Bob,\r\nthis is line two.\r\n"
    assert body(PLAIN, 1, text="MIME") == body(PLAIN, text="HEADER")
    assert body(PLAIN, 2) is None and body(PLAIN, 1, 1) is None


def test_multipart_parts_and_their_mime_headers():
    assert body(ALTERNATIVE, 1) == b"Thanks for your order=21"
    assert body(ALTERNATIVE, 2) == b"<html><body>Thanks!</body></html>"
    assert body(ALTERNATIVE, 2, text="MIME") == b"Content-Type: text/html; charset=utf-8\r\n\r\n"
    assert body(ALTERNATIVE, 3) is None and body(ALTERNATIVE, 0) is None


def test_text_part_has_no_header_section():
    assert body(ALTERNATIVE, 1, text="HEADER") is None
    assert body(ALTERNATIVE, 1, text="TEXT") is None


def test_message_rfc822_part_numbers_refer_to_the_encapsulated_message():
    inner = NESTED[NESTED.index(b'From: "C"') : NESTED.index(b"\r\n--outer--")]
    assert body(NESTED, 2) == inner
    assert body(NESTED, 2, text="HEADER") == inner[: inner.index(b"\r\n\r\n") + 4]
    assert body(NESTED, 2, text="TEXT") == inner[inner.index(b"\r\n\r\n") + 4 :]
    assert body(NESTED, 2, text="MIME") == b"Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"
    assert body(NESTED, 2, 1) == b"hi"
    assert body(NESTED, 2, 2, 1) == b"<p>hi<img src=cid:x></p>"
    assert body(NESTED, 2, 2, 2) == b"R0lGODlhAQABAAAAACw="
    assert body(NESTED, 2, 2, 2, text="MIME") == (
        b"Content-Type: image/gif\r\nContent-ID: <x>\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    )
    assert body(NESTED, 2, 3) is None and body(NESTED, 2, 2, 3) is None and body(NESTED, 3) is None
    assert body(NESTED, 2, fields=("subject",), text="HEADER.FIELDS") == b"Subject: inner\r\n\r\n"


def test_top_level_message_rfc822():
    raw = crlf("From: a@example.com\nContent-Type: message/rfc822\n\nSubject: wrapped\n\nbody\n")
    assert body(raw, 1) == b"Subject: wrapped\r\n\r\nbody\r\n"
    assert body(raw, 1, text="HEADER") == b"Subject: wrapped\r\n\r\n"
    assert body(raw, 1, 1) == b"body\r\n"


def test_digest_parts_are_messages():
    assert body(DIGEST, 2, text="HEADER") == b"Subject: two\r\n\r\n"
    assert body(DIGEST, 2, 1) == b"2"


def test_header_fields_keep_folded_lines_and_match_names_case_insensitively():
    received = (
        b"Received: from mx.example.com (mx.example.com [192.0.2.1])\r\n"
        b"\tby mail.example.org with ESMTP; Mon, 7 Feb 1994 21:52:25 -0800\r\n"
    )
    assert body(PLAIN, text="HEADER.FIELDS", fields=("RECEIVED", "FROM")) == (
        received + b'From: "Alice Example" <alice@example.com>\r\n\r\n'
    )
    assert header_fields(b"SUBJECT : hi\r\nsubject: again\r\nTo: x\r\n\r\n", ["Subject"]) == (
        b"SUBJECT : hi\r\nsubject: again\r\n\r\n"
    )
    assert body(PLAIN, text="HEADER.FIELDS", fields=("X-NOT-THERE",)) == b"\r\n"


def test_header_fields_not():
    header = b"From: a\r\nTo: b\r\n c\r\nSubject: s\r\n\r\n"
    assert header_fields(header, ["FROM", "SUBJECT"], exclude=True) == b"To: b\r\n c\r\n\r\n"


def test_header_fields_of_a_header_without_blank_line_or_final_line_end():
    assert header_fields(b"Subject: x", ["SUBJECT"]) == b"Subject: x\r\n\r\n"
    assert header_fields(b"Subject: x\nTo: y\n", ["SUBJECT"]) == b"Subject: x\n\r\n"


def test_bare_lf_is_served_as_stored():
    assert body(BARE_LF, 1) == b"one\ntwo"
    assert body(BARE_LF, 1, text="MIME") == b"Content-Type: text/plain\n\n"
    assert body(BARE_LF, 2, text="MIME") == b"\n"
    assert body(BARE_LF, 2) == b"no header part"
    assert body(BARE_LF, text="HEADER.FIELDS", fields=("SUBJECT",)) == b"Subject: lf\n\r\n"


def test_missing_close_boundary():
    assert body(UNCLOSED, 1) == b"first"
    assert body(UNCLOSED, 2) == b"second, never closed"


def test_inner_multipart_without_close_boundary_ends_at_the_outer_one():
    assert body(INNER_UNCLOSED, 1, 1) == b"x\r\n"
    assert body(INNER_UNCLOSED, 2, 1) == b"body\r\n\r\n"
    assert body(INNER_UNCLOSED, 3) is None


def test_missing_blank_line_after_the_header():
    assert body(NO_BLANK_LINE, text="HEADER") == b"From: a@example.com\r\nSubject: no blank\r\n"
    assert body(NO_BLANK_LINE, text="TEXT") == b"This line is body\r\n"
    assert body(NO_BLANK_LINE, 1) == b"This line is body\r\n"


def test_boundary_never_found_makes_the_body_one_part():
    assert body(BAD_BOUNDARY, 1) == body(BAD_BOUNDARY, text="TEXT")
    assert body(BAD_BOUNDARY, 2) is None


def test_delimiter_lines_in_a_row_make_no_empty_part():
    assert body(DOUBLE_DELIMITERS, 1) == b"A" and body(DOUBLE_DELIMITERS, 2) == b"B"
    assert body(DOUBLE_DELIMITERS, 3) is None


def test_boundary_text_is_not_a_pattern():
    raw = crlf('Content-Type: multipart/mixed; boundary="a.b+(c)"\n\n--aXb+(c)\n\nno\n--a.b+(c)\n\nyes\n--a.b+(c)--\n')
    assert body(raw, 1) == b"yes" and body(raw, 2) is None


def test_opaque_message_is_one_part():
    assert locate(MIXED, (1,), leaf_root=True).body == body(MIXED, text="TEXT")
    assert locate(MIXED, (2,), leaf_root=True) is None
    assert section_bytes(MIXED, Section(part=(1,), text="HEADER"), leaf_root=True) is None


def _leaves(node: dict, path: tuple, out: list) -> None:
    """(part number, stored node) of every leaf whose size delivery measured."""
    if node.get("parts"):
        for i, child in enumerate(node["parts"], 1):
            _leaves(child, path + (i,), out)
    elif "message" in node:
        inner = node["message"]["structure"]
        _leaves(inner, path if inner.get("parts") else path + (1,), out)
    elif node.get("size") is not None:  # a multipart whose boundary was never found is a leaf
        out.append((path or (1,), node))


@pytest.mark.parametrize("raw", SAMPLES)
def test_located_parts_agree_with_the_sizes_stored_at_delivery(raw):
    leaves: list = []
    _leaves(summarize(raw).structure, (), leaves)
    assert leaves
    for path, node in leaves:
        data = body(raw, *path)
        assert (len(data), count_lines(data)) == (node["size"], node["lines"]), path
