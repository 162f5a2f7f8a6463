"""IMAP grammar primitives (RFC 3501 §9): every test checks the value and where parsing stopped."""
from datetime import date, datetime, timedelta, timezone

import pytest

from mailappliance.protocol.imap import grammar as g
from mailappliance.protocol.imap.types import ParseError, SequenceSet


def ok(parse, buf: bytes, value, rest: bytes = b"", *args):
    """``parse`` on ``buf`` gives ``value`` and leaves exactly ``rest``."""
    got, pos = parse(buf, 0, *args)
    assert (got, buf[pos:]) == (value, rest)


def bad(parse, buf: bytes, *args):
    with pytest.raises(ParseError):
        parse(buf, 0, *args)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"abc def", "abc", b" def"),
        (b"a.b[c]", "a.b[c", b"]"),
        (b"FLAGS)", "FLAGS", b")"),
        (b"x{5}", "x", b"{5}"),
        (b"$Junk%", "$Junk", b"%"),
    ],
)
def test_atom(buf, value, rest):
    ok(g.parse_atom, buf, value, rest)


@pytest.mark.parametrize("buf", [b"", b" a", b"(a", b'"a"', b"\\Seen", b"%", b"\xe9t\xe9", b"\x00a"])
def test_atom_bad(buf):
    bad(g.parse_atom, buf)


def test_keyword_upper_cases():
    ok(g.parse_keyword, b"fetch 1", "FETCH", b" 1")


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"0", 0, b""),
        (b"007 x", 7, b" x"),
        (b"4294967295)", 4294967295, b")"),
    ],
)
def test_number(buf, value, rest):
    ok(g.parse_number, buf, value, rest)


@pytest.mark.parametrize("buf", [b"", b"-1", b"4294967296", b"99999999999999999999999999", b"1" * 5000, b"x1"])
def test_number_bad(buf):
    bad(g.parse_number, buf)


@pytest.mark.parametrize("buf", [b"0", b"01", b"4294967296", b"18446744073709551617", b""])
def test_nz_number_bad(buf):
    bad(g.parse_nz_number, buf)


def test_nz_number():
    ok(g.parse_nz_number, b"1:", 1, b":")
    ok(g.parse_nz_number, b"4294967295", 4294967295)


def test_modseq():
    ok(g.parse_modseq, b"9223372036854775807 ", 9223372036854775807, b" ")
    ok(g.parse_modseq, b"0)", 0, b")", True)
    bad(g.parse_modseq, b"0")
    bad(g.parse_modseq, b"9223372036854775808")


# ---------------------------------------------------------------- strings


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b'"" x', b"", b" x"),
        (b'"hello world")', b"hello world", b")"),
        (b'"a\\"b\\\\c" d', b'a"b\\c', b" d"),
        (b'"tab\there"', b"tab\there", b""),
        (b'"{5}"', b"{5}", b""),
    ],
)
def test_quoted(buf, value, rest):
    ok(g.parse_quoted, buf, value, rest)


@pytest.mark.parametrize(
    "buf",
    [
        b'"unterminated',
        b'"cr\rlf"',
        b'"lf\nx"',
        b'"nul\x00"',
        b'"8bit \xc3\xa9"',
        b'"bad \\n escape"',
        b'"trailing backslash\\"',
        b"noquote",
        b"",
    ],
)
def test_quoted_bad(buf):
    bad(g.parse_quoted, buf)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"{5}\r\nhello world", b"hello", b" world"),
        (b"{5+}\r\nhello", b"hello", b""),
        (b"{5}\nhello", b"hello", b""),  # bare LF, as the framer may pass through
        (b"{0}\r\n x", b"", b" x"),
        (b"{4}\r\n\r\n\xe9\xff)", b"\r\n\xe9\xff", b")"),
    ],
)
def test_literal(buf, value, rest):
    ok(g.parse_literal, buf, value, rest)


@pytest.mark.parametrize(
    "buf",
    [
        b"{5}\r\nhell",  # shorter than announced
        b"{5}hello",  # no line ending
        b"{5} \r\nhello",
        b"{-5}\r\n",
        b"{}\r\n",
        b"{5++}\r\nhello",
        b"{99999999999}\r\n",
        b"{3}\r\na\x00b",  # NUL is not CHAR8
        b"{5",
    ],
)
def test_literal_bad(buf):
    bad(g.parse_literal, buf)


def test_literal_binary_allows_nul():
    ok(g.parse_literal, b"{3}\r\na\x00b", b"a\x00b", b"", True)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"user pass", b"user", b" pass"),
        (b'"my user" x', b"my user", b" x"),
        (b"{2}\r\nab", b"ab", b""),
        (b"a]b c", b"a]b", b" c"),  # ']' is an ASTRING-CHAR
        (b"NIL", b"NIL", b""),  # an astring can be the word NIL
    ],
)
def test_astring(buf, value, rest):
    ok(g.parse_astring, buf, value, rest)


@pytest.mark.parametrize("buf", [b"", b" x", b"(x)", b"%", b"*", b"\xc3\xa9"])
def test_astring_bad(buf):
    bad(g.parse_astring, buf)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"NIL)", None, b")"),
        (b"nil ", None, b" "),
        (b'"NIL"', b"NIL", b""),
        (b"{3}\r\nNIL", b"NIL", b""),
    ],
)
def test_nstring(buf, value, rest):
    ok(g.parse_nstring, buf, value, rest)


@pytest.mark.parametrize("buf", [b"NILS", b"atom", b""])
def test_nstring_bad(buf):
    bad(g.parse_nstring, buf)


def test_string_is_not_an_atom():
    bad(g.parse_string, b"atom")
    ok(g.parse_string, b'"q" x', b"q", b" x")


def test_text_never_fails():
    assert g.text(b"caf\xc3\xa9") == "café"
    assert g.text(b"\xff").encode("utf-8", "surrogateescape") == b"\xff"


# ---------------------------------------------------------------- folder names


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"INBOX", "INBOX", b""),
        (b"inbox x", "INBOX", b" x"),
        (b'"InBoX"', "INBOX", b""),
        (b"INBOX.Sent", "INBOX.Sent", b""),
        (b"inbox/sub", "inbox/sub", b""),  # only INBOX itself is case-insensitive
        (b"Entw&APw-rfe", "Entwürfe", b""),
        (b'"Gesendete Objekte" ', "Gesendete Objekte", b" "),
        (b"{12}\r\nEntw&APw-rfe", "Entwürfe", b""),
        (b"{9}\r\nEntw\xc3\xbcrfe", "Entwürfe", b""),  # raw UTF-8 from a literal
        (b'"A&-B"', "A&B", b""),
        (b'""', "", b""),
    ],
)
def test_mailbox(buf, value, rest):
    ok(g.parse_mailbox, buf, value, rest)


@pytest.mark.parametrize(
    "buf",
    [
        b"Entw&APw",  # unterminated
        b"a&AO*-",
        b"{3}\r\n\xff\xfe\xfd",  # not UTF-8
        b"{3}\r\na\rb",  # control character
        b"*",
        b"%",
    ],
)
def test_mailbox_bad(buf):
    bad(g.parse_mailbox, buf)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"*", "*", b""),
        (b"% x", "%", b" x"),
        (b"INBOX.%", "INBOX.%", b""),
        (b"inbox", "INBOX", b""),
        (b"&AOk-*)", "é*", b")"),
        (b"a]b", "a]b", b""),
        (b'"with space/*"', "with space/*", b""),
        (b"{3}\r\n%/*", "%/*", b""),
    ],
)
def test_list_mailbox(buf, value, rest):
    ok(g.parse_list_mailbox, buf, value, rest)


def test_list_mailbox_bad():
    bad(g.parse_list_mailbox, b"(x)")
    bad(g.parse_list_mailbox, b"&Jjo*")


# ---------------------------------------------------------------- sequence sets


@pytest.mark.parametrize(
    "buf, ranges, rest",
    [
        (b"1", ((1, 1),), b""),
        (b"1:5 x", ((1, 5),), b" x"),
        (b"*", ((None, None),), b""),
        (b"5:*", ((5, None),), b""),
        (b"*:5", ((None, 5),), b""),
        (b"9:2", ((9, 2),), b""),  # backwards; resolve() normalises
        (b"1,3:4,7:*)", ((1, 1), (3, 4), (7, None)), b")"),
        (b"4294967295", ((4294967295, 4294967295),), b""),
    ],
)
def test_sequence_set(buf, ranges, rest):
    ok(g.parse_sequence_set, buf, SequenceSet(ranges), rest)


@pytest.mark.parametrize(
    "buf",
    [b"", b"0", b"0:5", b"1:0", b"01", b"1,", b",1", b"1::2", b"$", b"1,$", b"1:", b"**",
     b"4294967296", b"1:99999999999999999999", b"a", b"-1"],
)
def test_sequence_set_bad(buf):
    bad(g.parse_sequence_set, buf)


def test_sequence_set_range_limit():
    many = b",".join(b"%d" % n for n in range(1, g.MAX_SEQUENCE_RANGES + 1))
    got, pos = g.parse_sequence_set(many, 0)
    assert len(got.ranges) == g.MAX_SEQUENCE_RANGES and pos == len(many)
    bad(g.parse_sequence_set, many + b",1")


# ---------------------------------------------------------------- flags


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"\\Seen", "\\Seen", b""),
        (b"\\SEEN)", "\\Seen", b")"),
        (b"\\answered ", "\\Answered", b" "),
        (b"\\flagged", "\\Flagged", b""),
        (b"\\DeLeTeD", "\\Deleted", b""),
        (b"\\draft", "\\Draft", b""),
        (b"\\recent", "\\Recent", b""),
        (b"$Junk", "$Junk", b""),
        (b"NonJunk)", "NonJunk", b")"),
    ],
)
def test_flag(buf, value, rest):
    ok(g.parse_flag, buf, value, rest)


@pytest.mark.parametrize("buf", [b"\\Recent", b"\\Foo", b"\\*", b"\\", b"(a)", b'"a"', b""])
def test_flag_not_settable(buf):
    bad(g.parse_flag, buf, True)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"()", (), b""),
        (b"(\\seen $Label1) x", ("\\Seen", "$Label1"), b" x"),
        (b"(\\Seen \\SEEN a a)", ("\\Seen", "a"), b""),
    ],
)
def test_flag_list(buf, value, rest):
    ok(g.parse_flag_list, buf, value, rest)


@pytest.mark.parametrize("buf", [b"(", b"(\\Seen", b"(\\Seen  a)", b"( a)", b"\\Seen", b"(\\Recent)", b"((a))"])
def test_flag_list_bad(buf):
    bad(g.parse_flag_list, buf)


# ---------------------------------------------------------------- dates


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b"1-Feb-2024", date(2024, 2, 1), b""),
        (b"01-feb-2024 x", date(2024, 2, 1), b" x"),
        (b'"29-FEB-2024")', date(2024, 2, 29), b")"),
        (b"31-Dec-1999", date(1999, 12, 31), b""),
    ],
)
def test_date(buf, value, rest):
    ok(g.parse_date, buf, value, rest)


@pytest.mark.parametrize(
    "buf",
    [b"29-Feb-2023", b"1-Foo-2024", b"1-Feb-24", b"123-Feb-2024", b'"1-Feb-2024', b"1-Feb-20245",
     b"2024-02-01", b"", b"1-Feb-2024x"],
)
def test_date_bad(buf):
    bad(g.parse_date, buf)


@pytest.mark.parametrize(
    "buf, value, rest",
    [
        (b'"17-Jul-1996 02:44:25 -0700" {3}', datetime(1996, 7, 17, 2, 44, 25, tzinfo=timezone(-timedelta(hours=7))), b" {3}"),
        (b'" 1-Feb-2024 00:00:00 +0000"', datetime(2024, 2, 1, tzinfo=timezone.utc), b""),
        (b'"1-feb-2024 23:59:59 +0530"', datetime(2024, 2, 1, 23, 59, 59, tzinfo=timezone(timedelta(hours=5, minutes=30))), b""),
    ],
)
def test_date_time(buf, value, rest):
    got, pos = g.parse_date_time(buf, 0)
    assert (got, got.utcoffset(), buf[pos:]) == (value, value.utcoffset(), rest)


@pytest.mark.parametrize(
    "buf",
    [
        b"17-Jul-1996 02:44:25 -0700",  # must be quoted
        b'"17-Jul-1996 02:44:25"',
        b'"17-Jul-1996 24:00:00 +0000"',
        b'"17-Jul-1996 02:44:25 +2400"',
        b'"17-Jul-1996 02:44:25 +0060"',
        b'"32-Jul-1996 02:44:25 +0000"',
        b'"17-Jul-1996 2:44:25 +0000"',
    ],
)
def test_date_time_bad(buf):
    bad(g.parse_date_time, buf)


def test_tag():
    ok(g.parse_tag, b"a1 NOOP", "a1", b" NOOP")
    ok(g.parse_tag, b"A]b NOOP", "A]b", b" NOOP")
    ok(g.parse_tag, b"a+b", "a", b"+b")  # the caller then wants a space
    bad(g.parse_tag, b"+a NOOP")
    bad(g.parse_tag, b"*")
    bad(g.parse_tag, b"")
