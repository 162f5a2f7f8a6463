"""parse_command for every command (RFC 3501 §6 and the extensions offered)."""
from datetime import datetime, timedelta, timezone
import time

import pytest

from mailappliance.protocol.imap.commands import parse_fetch_attribute
from mailappliance.protocol.imap.grammar import parse_command
from mailappliance.protocol.imap.types import (
    Append, Authenticate, Command, CopyMove, Enable, Fetch, FetchAttribute, FolderName, Id, ListFolders, Login,
    ParseError, Rename, SearchKey, Section, Select, SequenceSet, Sort, SortCriterion, Status, Store, Thread,
    UidExpunge,
)

ALL_MESSAGES = SequenceSet(((1, None),))
ONE = SequenceSet(((1, 1),))


def seq(*ranges):
    return SequenceSet(tuple(ranges))


def program(*keys):
    return SearchKey("AND", children=tuple(keys))


F = FetchAttribute

CASES = [
    # any state
    (b"a CAPABILITY", Command("a", "CAPABILITY")),
    (b"a noop", Command("a", "NOOP")),
    (b"A1 LogOut", Command("A1", "LOGOUT")),
    (b"a ID NIL", Command("a", "ID", Id(None))),
    (b'a ID ("name" "mutt" "version" NIL)', Command("a", "ID", Id((("name", "mutt"), ("version", None))))),
    (b"a ID ()", Command("a", "ID", Id(()))),
    # not authenticated
    (b"a STARTTLS", Command("a", "STARTTLS")),
    (b"a LOGIN user@example.com secret", Command("a", "LOGIN", Login("user@example.com", "secret"))),
    (b'a LOGIN "us er" "p\\"w"', Command("a", "LOGIN", Login("us er", 'p"w'))),
    (b"a LOGIN {4}\r\nuser {3+}\r\np w", Command("a", "LOGIN", Login("user", "p w"))),
    (b"a LOGIN u {2}\r\n\xc3\xa9", Command("a", "LOGIN", Login("u", "é"))),
    (b"a AUTHENTICATE plain", Command("a", "AUTHENTICATE", Authenticate("PLAIN"))),
    (b"a AUTHENTICATE PLAIN AHVzZXIAcGFzcw==", Command("a", "AUTHENTICATE", Authenticate("PLAIN", "AHVzZXIAcGFzcw=="))),
    (b"a AUTHENTICATE PLAIN =", Command("a", "AUTHENTICATE", Authenticate("PLAIN", "="))),
    (b"a AUTHENTICATE X-OAUTH2 dXNl", Command("a", "AUTHENTICATE", Authenticate("X-OAUTH2", "dXNl"))),
    # authenticated
    (b"a SELECT inbox", Command("a", "SELECT", Select("INBOX"))),
    (b"a EXAMINE Archive", Command("a", "EXAMINE", Select("Archive", readonly=True))),
    (b"a SELECT INBOX (condstore)", Command("a", "SELECT", Select("INBOX", condstore=True))),
    (b'a EXAMINE "Entw&APw-rfe" (CONDSTORE)', Command("a", "EXAMINE", Select("Entwürfe", True, True))),
    (b"a CREATE Projects/2024", Command("a", "CREATE", FolderName("Projects/2024"))),
    (b"a DELETE {5}\r\nTrash", Command("a", "DELETE", FolderName("Trash"))),
    (b"a SUBSCRIBE &ZeVnLIqe-", Command("a", "SUBSCRIBE", FolderName("日本語"))),
    (b"a UNSUBSCRIBE inbox", Command("a", "UNSUBSCRIBE", FolderName("INBOX"))),
    (b'a RENAME "Old Name" New', Command("a", "RENAME", Rename("Old Name", "New"))),
    (b'a LIST "" *', Command("a", "LIST", ListFolders("", ("*",)))),
    (b'a LIST "" ""', Command("a", "LIST", ListFolders("", ("",)))),
    (b"a LIST INBOX/ %", Command("a", "LIST", ListFolders("INBOX/", ("%",)))),
    (b'a list "" inbox', Command("a", "LIST", ListFolders("", ("INBOX",)))),
    (b'a LIST (SPECIAL-USE) "" *', Command("a", "LIST", ListFolders("", ("*",), select_options=("SPECIAL-USE",)))),
    (b'a LIST "" * RETURN (SPECIAL-USE children)',
     Command("a", "LIST", ListFolders("", ("*",), return_options=("SPECIAL-USE", "CHILDREN")))),
    (b'a LIST (subscribed recursivematch) "" ("INBOX" &AOk-* %) RETURN ()',
     Command("a", "LIST", ListFolders("", ("INBOX", "é*", "%"), select_options=("SUBSCRIBED", "RECURSIVEMATCH")))),
    (b"a LIST () x %", Command("a", "LIST", ListFolders("x", ("%",)))),
    (b'a LSUB "" *', Command("a", "LSUB", ListFolders("", ("*",), lsub=True))),
    (b"a STATUS INBOX (MESSAGES unseen UIDNEXT UIDVALIDITY RECENT HIGHESTMODSEQ SIZE)",
     Command("a", "STATUS", Status("INBOX", ("MESSAGES", "UNSEEN", "UIDNEXT", "UIDVALIDITY", "RECENT", "HIGHESTMODSEQ", "SIZE")))),
    (b"a APPEND INBOX {5}\r\nhello", Command("a", "APPEND", Append("INBOX", (), None, b"hello"))),
    (b"a APPEND Sent (\\Seen $Sent) {3+}\r\na\x00b",
     Command("a", "APPEND", Append("Sent", ("\\Seen", "$Sent"), None, b"a\x00b"))),
    (b'a APPEND Drafts () "01-Feb-2024 10:11:12 +0100" {2}\r\n\r\n',
     Command("a", "APPEND", Append("Drafts", (), datetime(2024, 2, 1, 10, 11, 12, tzinfo=timezone(timedelta(hours=1))), b"\r\n"))),
    (b'a APPEND Drafts " 1-Feb-2024 10:11:12 -0000" {0}\r\n',
     Command("a", "APPEND", Append("Drafts", (), datetime(2024, 2, 1, 10, 11, 12, tzinfo=timezone.utc), b""))),
    (b"a ENABLE CONDSTORE", Command("a", "ENABLE", Enable(("CONDSTORE",)))),
    (b"a ENABLE condstore QRESYNC UTF8=ACCEPT", Command("a", "ENABLE", Enable(("condstore", "QRESYNC", "UTF8=ACCEPT")))),
    (b"a IDLE", Command("a", "IDLE")),
    (b"a NAMESPACE", Command("a", "NAMESPACE")),
    # selected
    (b"a CHECK", Command("a", "CHECK")),
    (b"a CLOSE", Command("a", "CLOSE")),
    (b"a UNSELECT", Command("a", "UNSELECT")),
    (b"a EXPUNGE", Command("a", "EXPUNGE")),
    (b"a UID EXPUNGE 3:5,9", Command("a", "EXPUNGE", UidExpunge(seq((3, 5), (9, 9))))),
    (b"a COPY 1:* Archive", Command("a", "COPY", CopyMove(ALL_MESSAGES, "Archive"))),
    (b'a uid copy 5 "Sent Items"', Command("a", "COPY", CopyMove(seq((5, 5)), "Sent Items", uid=True))),
    (b"a MOVE 2,4 Trash", Command("a", "MOVE", CopyMove(seq((2, 2), (4, 4)), "Trash"))),
    (b"a UID MOVE 9:7 inbox", Command("a", "MOVE", CopyMove(seq((9, 7)), "INBOX", uid=True))),
    # FETCH
    (b"a FETCH 1 FLAGS", Command("a", "FETCH", Fetch(ONE, (F("FLAGS"),)))),
    (b"a FETCH 1:* ALL", Command("a", "FETCH", Fetch(ALL_MESSAGES, (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE"))))),
    (b"a FETCH 1 fast", Command("a", "FETCH", Fetch(ONE, (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"))))),
    (b"a FETCH 1 FULL", Command("a", "FETCH", Fetch(ONE, (F("FLAGS"), F("INTERNALDATE"), F("RFC822.SIZE"), F("ENVELOPE"), F("BODY"))))),
    (b"a UID FETCH 1:* (UID FLAGS MODSEQ) (CHANGEDSINCE 12345)",
     Command("a", "FETCH", Fetch(ALL_MESSAGES, (F("UID"), F("FLAGS"), F("MODSEQ")), uid=True, changedsince=12345))),
    (b"a FETCH 2 (body[] rfc822.header RFC822.TEXT RFC822 BODYSTRUCTURE body ENVELOPE)",
     Command("a", "FETCH", Fetch(seq((2, 2)), (F("BODY", Section()), F("RFC822.HEADER"), F("RFC822.TEXT"), F("RFC822"),
                                             F("BODYSTRUCTURE"), F("BODY"), F("ENVELOPE"))))),
    (b"a FETCH 1 BODY.PEEK[HEADER.FIELDS (From To)]",
     Command("a", "FETCH", Fetch(ONE, (F("BODY", Section((), "HEADER.FIELDS", ("FROM", "TO")), peek=True),)))),
]


@pytest.mark.parametrize("data, command", CASES, ids=[c[0][:60].decode("latin-1") for c in CASES])
def test_parse_command(data, command):
    assert parse_command(data) == command


@pytest.mark.parametrize(
    "buf, attribute, rest",
    [
        (b"FLAGS)", F("FLAGS"), b")"),
        (b"uid ", F("UID"), b" "),
        (b"BODY", F("BODY"), b""),
        (b"BODY[]", F("BODY", Section()), b""),
        (b"BODY[]<0.1024> x", F("BODY", Section(), (0, 1024)), b" x"),
        (b"BODY.PEEK[TEXT]", F("BODY", Section((), "TEXT"), peek=True), b""),
        (b"body.peek[header]<10.20>", F("BODY", Section((), "HEADER"), (10, 20), True), b""),
        (b"BODY[1]", F("BODY", Section((1,))), b""),
        (b"BODY[1.2.3]", F("BODY", Section((1, 2, 3))), b""),
        (b"BODY[1.2.MIME]", F("BODY", Section((1, 2), "MIME")), b""),
        (b"BODY[2.TEXT]", F("BODY", Section((2,), "TEXT")), b""),
        (b"BODY[3.HEADER]", F("BODY", Section((3,), "HEADER")), b""),
        (b"BODY[HEADER.FIELDS (date from)])", F("BODY", Section((), "HEADER.FIELDS", ("DATE", "FROM"))), b")"),
        (b"BODY[1.HEADER.FIELDS.NOT (X-Spam \"Received\" {2}\r\nTo)]",
         F("BODY", Section((1,), "HEADER.FIELDS.NOT", ("X-SPAM", "RECEIVED", "TO"))), b""),
        (b"MODSEQ", F("MODSEQ"), b""),
        (b"RFC822.SIZE", F("RFC822.SIZE"), b""),
        (b"INTERNALDATE", F("INTERNALDATE"), b""),
    ],
)
def test_fetch_attribute(buf, attribute, rest):
    got, pos = parse_fetch_attribute(buf, 0)
    assert (got, buf[pos:]) == (attribute, rest)


@pytest.mark.parametrize(
    "buf",
    [
        b"BODY.PEEK", b"BODY[", b"BODY[1.]", b"BODY[0]", b"BODY[1..2]", b"BODY[MIME]", b"BODY[FOO]",
        b"BODY[HEADER.FIELDS]", b"BODY[HEADER.FIELDS ()]", b"BODY[HEADER.FIELDS (a]", b"BODY[]<0>",
        b"BODY[]<0.0>", b"BODY[]<.5>", b"BODY[]<1.5", b"BODY[]<1.99999999999>", b"RFC822.FOO", b"BINARY[1]",
        b"ALL", b"", b"(FLAGS)", b"BODY[TEXT.MIME]",
    ],
)
def test_fetch_attribute_bad(buf):
    with pytest.raises(ParseError):
        parse_fetch_attribute(buf, 0)


@pytest.mark.parametrize(
    "data, store",
    [
        (b"a STORE 1 FLAGS (\\Seen)", Store(ONE, "", False, ("\\Seen",))),
        (b"a STORE 1 +FLAGS.SILENT (\\deleted $Junk)", Store(ONE, "+", True, ("\\Deleted", "$Junk"))),
        (b"a STORE 1 -flags \\Flagged", Store(ONE, "-", False, ("\\Flagged",))),
        (b"a STORE 1 +FLAGS \\Seen \\Answered foo", Store(ONE, "+", False, ("\\Seen", "\\Answered", "foo"))),
        (b"a STORE 1 FLAGS ()", Store(ONE, "", False, ())),
        (b"a STORE 1:* (UNCHANGEDSINCE 0) -FLAGS (\\Seen)", Store(ALL_MESSAGES, "-", False, ("\\Seen",), unchangedsince=0)),
        (b"a STORE 1 (unchangedsince 99) FLAGS.SILENT ()", Store(ONE, "", True, (), unchangedsince=99)),
    ],
)
def test_store(data, store):
    assert parse_command(data) == Command("a", "STORE", store)
    uid = parse_command(data.replace(b"a STORE", b"a UID STORE"))
    assert uid.args.uid and uid.name == "STORE"


def test_sort_and_thread():
    assert parse_command(b"a SORT (REVERSE ARRIVAL subject) UTF-8 ALL") == Command(
        "a", "SORT", Sort((SortCriterion("ARRIVAL", True), SortCriterion("SUBJECT")), "UTF-8", program(SearchKey("ALL")))
    )
    assert parse_command(b'a UID SORT (DATE) "us-ascii" UNSEEN FROM x') == Command(
        "a", "SORT", Sort((SortCriterion("DATE"),), "US-ASCII", program(SearchKey("UNSEEN"), SearchKey("FROM", "x")), uid=True)
    )
    assert parse_command(b"a THREAD references UTF-8 SINCE 1-Feb-2024") == Command(
        "a", "THREAD", Thread("REFERENCES", "UTF-8", program(SearchKey("SINCE", datetime(2024, 2, 1).date())))
    )
    assert parse_command(b"a UID THREAD ORDEREDSUBJECT US-ASCII ALL").args == Thread(
        "ORDEREDSUBJECT", "US-ASCII", program(SearchKey("ALL")), uid=True
    )


BAD = [
    (b"", None),
    (b" ", None),
    (b"+ NOOP", None),
    (b"* NOOP", None),
    (b"a", "a"),
    (b"a ", "a"),
    (b"a  NOOP", "a"),
    (b"a NOOP ", "a"),
    (b"a NOOP extra", "a"),
    (b"a\tNOOP", "a"),
    (b"a FROB", "a"),
    (b"a UID", "a"),
    (b"a UID NOOP", "a"),
    (b"a UID FROB 1", "a"),
    (b"a NO\x00OP", "a"),
    (b"a LOGIN user", "a"),
    (b"a LOGIN user pass extra", "a"),
    (b'a LOGIN "user\xe9" pass', "a"),
    (b'a LOGIN "user pass', "a"),
    (b"a LOGIN {10}\r\nshort", "a"),
    (b"a LOGIN {3}\r\nuserpass", "a"),  # literal length mismatch: "r" "pass" is not one argument
    (b"a LOGIN us\x00er pass", "a"),
    (b"a AUTHENTICATE", "a"),
    (b"a AUTHENTICATE PLAIN a==b", "a"),
    (b"a AUTHENTICATE PLAIN abc", "a"),
    (b"a AUTHENTICATE PLAIN ", "a"),
    (b"a AUTHENTICATE PLAIN abcd efgh", "a"),
    (b"a SELECT", "a"),
    (b"a SELECT INBOX (QRESYNC (1 2))", "a"),
    (b"a SELECT INBOX (CONDSTORE", "a"),
    (b"a SELECT INBOX extra", "a"),
    (b"a SELECT bad&name", "a"),
    (b"a CREATE", "a"),
    (b"a RENAME a", "a"),
    (b"a LIST", "a"),
    (b'a LIST ""', "a"),
    (b'a LIST (RECURSIVEMATCH) "" *', "a"),
    (b'a LIST (FROB) "" *', "a"),
    (b'a LIST "" * RETURN (STATUS (MESSAGES))', "a"),
    (b'a LIST "" * FROB ()', "a"),
    (b'a LIST "" (a b', "a"),
    (b'a LIST "" ()', "a"),
    (b"a LSUB x", "a"),
    (b"a STATUS INBOX ()", "a"),
    (b"a STATUS INBOX (MESSAGES FROB)", "a"),
    (b"a STATUS INBOX MESSAGES", "a"),
    (b"a STATUS INBOX (MESSAGES", "a"),
    (b"a APPEND INBOX", "a"),
    (b'a APPEND INBOX "hello"', "a"),
    (b"a APPEND INBOX (\\Recent) {1}\r\nx", "a"),
    (b'a APPEND INBOX "1-Feb-2024" {1}\r\nx', "a"),
    (b"a APPEND INBOX {5}\r\nab", "a"),
    (b"a APPEND INBOX {1}\r\nab", "a"),
    (b"a APPEND INBOX {1}\r\na {1}\r\nb", "a"),  # MULTIAPPEND is not offered
    (b"a ENABLE", "a"),
    (b"a ID", "a"),
    (b'a ID ("name")', "a"),
    (b'a ID ("name" "x"', "a"),
    (b"a ID NILS", "a"),
    (b"a FETCH", "a"),
    (b"a FETCH 1", "a"),
    (b"a FETCH 1 ()", "a"),
    (b"a FETCH 1 (FLAGS", "a"),
    (b"a FETCH 1 (FLAGS))", "a"),
    (b"a FETCH 1 (ALL)", "a"),
    (b"a FETCH 1 FLAGS UID", "a"),
    (b"a FETCH 0 FLAGS", "a"),
    (b"a FETCH 4294967296 FLAGS", "a"),
    (b"a FETCH $ FLAGS", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 0)", "a"),
    (b"a FETCH 1 FLAGS (VANISHED)", "a"),
    (b"a FETCH 1 FLAGS (CHANGEDSINCE 9223372036854775808)", "a"),
    (b"a FETCH 1 ((FLAGS))", "a"),
    (b"a STORE 1 FLAGS", "a"),
    (b"a STORE 1 FLAGS (\\Recent)", "a"),
    (b"a STORE 1 +FLAGS \\Foo", "a"),
    (b"a STORE 1 *FLAGS (x)", "a"),
    (b"a STORE 1 LABELS (x)", "a"),
    (b"a STORE 1 (UNCHANGEDSINCE) FLAGS (x)", "a"),
    (b"a STORE 1 (FROB 1) FLAGS (x)", "a"),
    (b"a COPY 1", "a"),
    (b"a COPY x INBOX", "a"),
    (b"a EXPUNGE 1", "a"),
    (b"a UID EXPUNGE", "a"),
    (b"a SORT DATE UTF-8 ALL", "a"),
    (b"a SORT (FROB) UTF-8 ALL", "a"),
    (b"a SORT (REVERSE) UTF-8 ALL", "a"),
    (b"a SORT (DATE) UTF-8", "a"),
    (b"a THREAD REFERENCES UTF-8", "a"),
    (b"a CHECK now", "a"),
]


@pytest.mark.parametrize("data, tag", BAD, ids=[b[0][:50].decode("latin-1") for b in BAD])
def test_malformed(data, tag):
    with pytest.raises(ParseError) as info:
        parse_command(data)
    assert info.value.tag == tag


def test_unknown_command_message():
    with pytest.raises(ParseError, match="unknown command") as info:
        parse_command(b"x1 XYZZY 1 2 3")
    assert info.value.tag == "x1"


@pytest.mark.parametrize("tag", ["a", "A001", "a.b", "]", "x]y", "!#$&',-./:;<=>?@^_`|}~", "[tag]"])
def test_any_tag_without_plus(tag):
    assert parse_command(tag.encode() + b" NOOP") == Command(tag, "NOOP")


def test_typical_fetch_is_fast():
    data = b"A0042 UID FETCH 1:* (UID RFC822.SIZE FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (From To Cc Subject Date Message-ID)])"
    rounds = 2000
    start = time.perf_counter()
    for _ in range(rounds):
        parse_command(data)
    per_call = (time.perf_counter() - start) / rounds
    assert per_call < 100e-6
