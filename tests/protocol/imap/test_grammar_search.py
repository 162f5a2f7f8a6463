"""SEARCH and its keys (RFC 3501 §6.4.4, RFC 4731 RETURN, RFC 7162 MODSEQ)."""
from datetime import date

import pytest

from mailappliance.protocol.imap.grammar import parse_command
from mailappliance.protocol.imap.searchkeys import MAX_SEARCH_DEPTH, decoder, parse_search_key
from mailappliance.protocol.imap.types import Command, ParseError, Search, SearchKey, SequenceSet

K = SearchKey


def program(*keys):
    return K("AND", children=tuple(keys))


@pytest.mark.parametrize(
    "buf, key, rest",
    [
        (b"ALL", K("ALL"), b""),
        (b"unseen x", K("UNSEEN"), b" x"),
        (b"ANSWERED)", K("ANSWERED"), b")"),
        *[(name.encode(), K(name), b"") for name in (
            "DELETED", "DRAFT", "FLAGGED", "NEW", "OLD", "RECENT", "SEEN", "UNANSWERED", "UNDELETED",
            "UNDRAFT", "UNFLAGGED")],
        (b"FROM alice", K("FROM", "alice"), b""),
        (b'to "Bob Smith" x', K("TO", "Bob Smith"), b" x"),
        (b"CC {3}\r\ncar", K("CC", "car"), b""),
        (b"BCC x", K("BCC", "x"), b""),
        (b"SUBJECT hello", K("SUBJECT", "hello"), b""),
        (b"BODY {5+}\r\nhe lo", K("BODY", "he lo"), b""),
        (b'TEXT ""', K("TEXT", ""), b""),
        (b"BEFORE 1-Feb-2024", K("BEFORE", date(2024, 2, 1)), b""),
        (b'ON "15-mar-2023"', K("ON", date(2023, 3, 15)), b""),
        (b"SINCE 01-Jan-2000)", K("SINCE", date(2000, 1, 1)), b")"),
        (b"SENTBEFORE 2-Feb-2024", K("SENTBEFORE", date(2024, 2, 2)), b""),
        (b"SENTON 2-Feb-2024", K("SENTON", date(2024, 2, 2)), b""),
        (b"SENTSINCE 2-Feb-2024", K("SENTSINCE", date(2024, 2, 2)), b""),
        (b"LARGER 1000", K("LARGER", 1000), b""),
        (b"SMALLER 0", K("SMALLER", 0), b""),
        (b"KEYWORD $Junk", K("KEYWORD", "$Junk"), b""),
        (b"UNKEYWORD \\seen", K("UNKEYWORD", "\\Seen"), b""),
        (b"HEADER Message-ID <a@b>", K("HEADER", ("Message-ID", "<a@b>")), b""),
        (b'HEADER "X-Spam" ""', K("HEADER", ("X-Spam", "")), b""),
        (b"UID 1:*", K("UID", SequenceSet(((1, None),))), b""),
        (b"uid 5,7:9 x", K("UID", SequenceSet(((5, 5), (7, 9)))), b" x"),
        (b"1:5", K("SEQSET", SequenceSet(((1, 5),))), b""),
        (b"*", K("SEQSET", SequenceSet(((None, None),))), b""),
        (b"2,4:3)", K("SEQSET", SequenceSet(((2, 2), (4, 3)))), b")"),
        (b"NOT SEEN", K("NOT", children=(K("SEEN"),)), b""),
        (b"NOT NOT 1", K("NOT", children=(K("NOT", children=(K("SEQSET", SequenceSet(((1, 1),))),)),)), b""),
        (b"OR SEEN FLAGGED x", K("OR", children=(K("SEEN"), K("FLAGGED"))), b" x"),
        (b"OR (FROM a TO b) NOT 3", K("OR", children=(
            K("AND", children=(K("FROM", "a"), K("TO", "b"))), K("NOT", children=(K("SEQSET", SequenceSet(((3, 3),))),)))), b""),
        (b"(SEEN)", K("AND", children=(K("SEEN"),)), b""),
        (b"((SEEN) (OR DRAFT (DELETED)))", K("AND", children=(
            K("AND", children=(K("SEEN"),)),
            K("AND", children=(K("OR", children=(K("DRAFT"), K("AND", children=(K("DELETED"),)))),)))), b""),
        (b"MODSEQ 0", K("MODSEQ", 0), b""),
        (b"MODSEQ 620162338", K("MODSEQ", 620162338), b""),
        (b'MODSEQ "/flags/\\\\draft" all 620162338 x', K("MODSEQ", 620162338), b" x"),
        (b'MODSEQ "/flags/$Junk" PRIV 5', K("MODSEQ", 5), b""),
    ],
)
def test_search_key(buf, key, rest):
    got, pos = parse_search_key(buf, 0)
    assert (got, buf[pos:]) == (key, rest)


@pytest.mark.parametrize(
    "buf",
    [
        b"", b"FROB", b"FROM", b"FROM ", b"BEFORE", b"BEFORE tomorrow", b"LARGER -1", b"LARGER 4294967296",
        b"LARGER x", b"HEADER Subject", b"UID", b"UID x", b"NOT", b"OR SEEN", b"OR SEEN  FLAGGED", b"()",
        b"(SEEN", b"(SEEN FLAGGED", b"(SEEN))x", b")", b"0", b"$", b"MODSEQ", b"MODSEQ x", b"MODSEQ -1",
        b'MODSEQ "/flags/" all 1', b'MODSEQ "/x/\\\\Seen" all 1', b'MODSEQ "/flags/\\\\Seen" 1',
        b'MODSEQ "/flags/\\\\Seen" mine 1', b"MODSEQ 9223372036854775808", b"KEYWORD", b"KEYWORD (x)",
        b"SEEN\x00", b"FROM \"\xe9\"", b"FROM \"a\nb\"",
    ],
)
def test_search_key_bad(buf):
    with pytest.raises(ParseError):
        got, pos = parse_search_key(buf, 0)
        if pos != len(buf):  # what a command would see as trailing garbage
            raise ParseError("trailing")


def test_search_depth_limit():
    deep = b"NOT " * (MAX_SEARCH_DEPTH - 1) + b"SEEN"
    key, pos = parse_search_key(deep, 0)
    assert pos == len(deep)
    for hostile in (b"NOT " * MAX_SEARCH_DEPTH + b"SEEN", b"(" * 5000 + b"SEEN" + b")" * 5000, b"OR " * 20000 + b"SEEN"):
        with pytest.raises(ParseError, match="nested too deeply"):
            parse_search_key(hostile, 0)


def test_unbalanced_parentheses_in_commands():
    for data in (b"a SEARCH (SEEN", b"a SEARCH SEEN)", b"a SEARCH ((SEEN)", b"a SEARCH (SEEN))", b"a SEARCH ("):
        with pytest.raises(ParseError) as info:
            parse_command(data)
        assert info.value.tag == "a"


@pytest.mark.parametrize(
    "data, search",
    [
        (b"a SEARCH ALL", Search(program(K("ALL")))),
        (b"a SEARCH FLAGGED SINCE 1-Feb-1994 NOT FROM \"Smith\"", Search(program(
            K("FLAGGED"), K("SINCE", date(1994, 2, 1)), K("NOT", children=(K("FROM", "Smith"),))))),
        (b"a SEARCH CHARSET utf-8 SUBJECT {3}\r\n\xc3\xa9t", Search(program(K("SUBJECT", "ét")), charset="UTF-8")),
        (b"a SEARCH charset US-ASCII TEXT x", Search(program(K("TEXT", "x")), charset="US-ASCII")),
        (b'a SEARCH CHARSET "ISO-8859-1" BODY {1}\r\n\xe9', Search(program(K("BODY", "é")), charset="ISO-8859-1")),
        (b"a SEARCH CHARSET KOI8-R ALL", Search(program(K("ALL")), charset="KOI8-R")),
        (b"a SEARCH RETURN (MIN MAX) UNSEEN", Search(program(K("UNSEEN")), return_options=("MIN", "MAX"))),
        (b"a SEARCH RETURN () ALL", Search(program(K("ALL")), return_options=())),
        (b"a SEARCH RETURN (count all) CHARSET UTF-8 1:*", Search(
            program(K("SEQSET", SequenceSet(((1, None),)))), charset="UTF-8", return_options=("COUNT", "ALL"))),
        (b"a SEARCH MODSEQ 5", Search(program(K("MODSEQ", 5)))),
    ],
)
def test_search_command(data, search):
    assert parse_command(data) == Command("a", "SEARCH", search)
    uid = parse_command(data.replace(b"a SEARCH", b"a UID SEARCH"))
    assert uid == Command("a", "SEARCH", Search(search.key, search.charset, True, search.return_options))


def test_search_without_charset_decodes_leniently():
    command = parse_command(b"a SEARCH SUBJECT {2}\r\n\xff\xfe")
    assert command.args.key.children[0].value.encode("utf-8", "surrogateescape") == b"\xff\xfe"


@pytest.mark.parametrize(
    "data",
    [
        b"a SEARCH", b"a SEARCH ", b"a SEARCH CHARSET UTF-8", b"a SEARCH CHARSET", b"a SEARCH RETURN (SAVE) ALL",
        b"a SEARCH RETURN (MIN", b"a SEARCH RETURN MIN ALL", b"a SEARCH RETURN (MIN) ", b"a SEARCH ALL  SEEN",
        b"a SEARCH ALL ", b"a SEARCH CHARSET UTF-8 RETURN (MIN) ALL",
        b"a SEARCH 1,3 CHARSET UTF-8",  # CHARSET only comes first
        b"a SEARCH CHARSET UTF-8 SUBJECT {4}\r\n\xc3\xa9t\xc3",  # not UTF-8 after all
        b"a SEARCH SUBJECT \"caf\xc3\xa9\"",  # 8-bit only in literals
    ],
)
def test_search_command_bad(data):
    with pytest.raises(ParseError) as info:
        parse_command(data)
    assert info.value.tag == "a"


def test_decoders():
    assert decoder("UTF-8")(b"\xc3\xa9") == "é"
    assert decoder(None)(b"abc") == "abc"
    assert decoder("windows-1252")(b"\xe9") == "é"
    with pytest.raises(ParseError):
        decoder("utf-8")(b"\xc3")
