"""IMAP over real sockets with imaplib and imapclient (RFC 3501 and extensions)."""
import imaplib
import smtplib
import socket
import ssl
import time
from datetime import datetime, timezone

import pytest

from tests.conftest import PASSWORD

USER = "user@example.com"
SIMPLE = b"From: a@example.com\r\nTo: user@example.com\r\nSubject: hello\r\nMessage-ID: <m1@example.com>\r\n\r\nbody text\r\n"


@pytest.fixture
def imap_app(appliance_factory):
    app = appliance_factory(allow_plaintext_auth=True)
    app.admin.create(USER, PASSWORD)
    return app


def connect(app, login=True) -> imaplib.IMAP4:
    client = imaplib.IMAP4("127.0.0.1", app.ports["imap"], timeout=10)
    if login:
        client.login(USER, PASSWORD)
    return client


def deliver(app, raw: bytes = SIMPLE, to: str = USER) -> None:
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("a@example.com", [to], raw)


def message(subject: str, body: str = "text", extra: str = "") -> bytes:
    return (
        f"From: Sender <s@example.com>\r\nTo: user@example.com\r\nSubject: {subject}\r\n{extra}"
        f"Date: Mon, 2 Nov 2026 10:00:00 +0000\r\n\r\n{body}\r\n"
    ).encode()


# ---------------------------------------------------------------------- login and TLS


def test_plaintext_login_disabled_until_starttls(appliance_factory):
    app = appliance_factory()
    app.admin.create(USER, PASSWORD)
    client = imaplib.IMAP4("127.0.0.1", app.ports["imap"], timeout=10)
    assert "LOGINDISABLED" in client.capabilities and "STARTTLS" in client.capabilities
    with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
        client.login(USER, PASSWORD)
    client.starttls(ssl_context=ssl._create_unverified_context())
    assert "LOGINDISABLED" not in client.capabilities
    assert client.login(USER, PASSWORD)[0] == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_implicit_tls_and_authenticate_plain(imap_app):
    client = imaplib.IMAP4_SSL("127.0.0.1", imap_app.ports["imaps"], ssl_context=ssl._create_unverified_context(), timeout=10)
    typ, _ = client.authenticate("PLAIN", lambda _: f"\0{USER}\0{PASSWORD}".encode())
    assert typ == "OK"
    assert client.select("INBOX")[0] == "OK"
    client.logout()


def test_wrong_password_is_no_and_connection_stays(imap_app):
    client = connect(imap_app, login=False)
    with pytest.raises(imaplib.IMAP4.error, match="AUTHENTICATIONFAILED"):
        client.login(USER, "wrong password")
    assert client.login(USER, PASSWORD)[0] == "OK"
    client.logout()


def test_sasl_ir_in_one_round_trip(imap_app):
    sock = socket.create_connection(("127.0.0.1", imap_app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    import base64

    token = base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()).decode()
    sock.sendall(f"a AUTHENTICATE PLAIN {token}\r\n".encode())
    assert f.readline().startswith(b"a OK")
    sock.close()


# ---------------------------------------------------------------------- delivery and FETCH


def test_mail_delivered_over_smtp_is_fetched_byte_exact(imap_app):
    deliver(imap_app)
    stored = imap_app.stores.collections.messages.find_one({"mailbox": USER})
    raw = imap_app.stores.blobs.read(stored["blob"], stored["size"])
    client = connect(imap_app)
    typ, data = client.select("INBOX")
    assert data == [b"1"]
    typ, data = client.fetch("1", "(RFC822.SIZE BODY.PEEK[] FLAGS)")
    assert data[0][1] == raw
    assert b"RFC822.SIZE %d" % len(raw) in data[0][0]
    assert b"\\Seen" not in data[0][0]
    typ, data = client.fetch("1", "(BODY[HEADER.FIELDS (SUBJECT)])")
    assert data[0][1] == b"Subject: hello\r\n\r\n"
    assert b"\\Seen" in data[0][0] or b"\\Seen" in client.fetch("1", "FLAGS")[1][0]
    typ, data = client.fetch("1", "(ENVELOPE BODYSTRUCTURE)")
    assert b'"hello"' in data[0] and b'"<m1@example.com>"' in data[0]
    client.logout()


def test_append_with_flags_and_date_then_uid_fetch(imap_app):
    client = connect(imap_app)
    when = imaplib.Time2Internaldate(datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone.utc))
    typ, data = client.append("Drafts", "(\\Draft $Label1)", when, message("draft one"))
    assert typ == "OK" and b"APPENDUID" in data[0]
    uidvalidity, uid = data[0].split(b"APPENDUID ")[1].rstrip(b"]").split()[:2]
    client.select("Drafts")
    typ, data = client.uid("FETCH", uid.decode().rstrip("]"), "(FLAGS INTERNALDATE UID)")
    assert b"\\Draft" in data[0] and b"$Label1" in data[0]
    assert b'" 4-Mar-2026 05:06:07 +0000"' in data[0]  # RFC 3501 date-day-fixed
    typ, data = client.select("Drafts")
    assert data == [b"1"]
    client.logout()


def test_append_to_missing_folder_says_trycreate(imap_app):
    client = connect(imap_app)
    typ, data = client.append("Nope", None, None, message("x"))
    assert typ == "NO" and b"TRYCREATE" in data[0]
    client.logout()


# ---------------------------------------------------------------------- STORE / SEARCH / COPY / MOVE / EXPUNGE


def fill(app, n: int, folder: str = "INBOX") -> imaplib.IMAP4:
    client = connect(app)
    for i in range(n):
        client.append(folder, None, None, message(f"subject {i}", f"body {i}"))
    client.select(folder)
    return client


def test_store_search_copy_move_expunge(imap_app):
    client = fill(imap_app, 6)
    assert client.store("2:3", "+FLAGS", "(\\Flagged)")[0] == "OK"
    assert client.search(None, "FLAGGED")[1] == [b"2 3"]
    assert client.search(None, "UNFLAGGED")[1] == [b"1 4 5 6"]
    assert client.search(None, "OR", "SUBJECT", '"subject 1"', "BODY", '"body 5"')[1] == [b"2 6"]
    assert client.search(None, "NOT", "SUBJECT", "subject", "ALL")[1] == [b""]
    assert client.uid("SEARCH", None, "UID", "4:*")[1] == [b"4 5 6"]
    typ, data = client.copy("1:2", "Trash")
    assert typ == "OK" and b"COPYUID" in data[0]
    typ, data = client.uid("MOVE", "5", "Junk")
    assert typ == "OK"
    assert client.select("INBOX")[1] == [b"5"]
    client.store("1", "+FLAGS", "(\\Deleted)")
    typ, data = client.expunge()
    assert data == [b"1"]
    assert client.select("Trash")[1] == [b"2"]
    assert client.select("Junk")[1] == [b"1"]
    typ, data = client.status("INBOX", "(MESSAGES UNSEEN UIDNEXT UIDVALIDITY)")
    assert b"MESSAGES 4" in data[0] and b"UIDNEXT 7" in data[0]
    client.logout()


def test_uid_expunge_removes_only_named_uids(imap_app):
    client = fill(imap_app, 3)
    client.store("1:3", "+FLAGS.SILENT", "(\\Deleted)")
    typ, data = client.uid("EXPUNGE", "2")
    assert typ == "OK" and client.untagged_responses.pop("EXPUNGE") == [b"2"]
    assert client.uid("SEARCH", None, "ALL")[1] == [b"1 3"]
    client.logout()


# ---------------------------------------------------------------------- folders


def test_create_rename_delete_list_lsub_subscribe(imap_app):
    client = connect(imap_app)
    assert client.create("Projects/2026/Q1")[0] == "OK"
    typ, data = client.list('""', "Projects/*")
    names = [line.split(b' "/" ')[1] for line in data]
    assert names == [b"Projects/2026", b"Projects/2026/Q1"]
    assert client.rename("Projects", "Work")[0] == "OK"
    typ, data = client.list('""', "*")
    assert any(b"Work/2026/Q1" in line for line in data) and not any(b"Projects" in line for line in data)
    assert b'(\\HasChildren) "/" Work' in data
    assert client.unsubscribe("Work/2026")[0] == "OK"
    typ, data = client.lsub('""', "Work/*")
    assert data == [b'() "/" Work/2026/Q1']
    assert client.delete("Work/2026/Q1")[0] == "OK"
    typ, data = client.list('""', "%")
    assert any(b"\\Sent" in line and b"Sent" in line for line in data)
    assert client.create("Caf&AOk-")[0] == "OK"  # modified UTF-7 for "Café" (RFC 3501 §5.1.3)
    assert client.list('""', "Caf*")[1] == [b'(\\HasNoChildren) "/" Caf&AOk-']
    with pytest.raises(imaplib.IMAP4.error, match="unterminated"):
        client.create("Bad&AOk")  # BAD: an unterminated encoding
    client.logout()


def test_rename_inbox_moves_messages_and_keeps_inbox(imap_app):
    client = fill(imap_app, 2)
    assert client.rename("INBOX", "Old")[0] == "OK"
    assert client.select("INBOX")[1] == [b"0"]
    assert client.select("Old")[1] == [b"2"]
    client.logout()


def test_inbox_is_case_insensitive(imap_app):
    client = connect(imap_app)
    assert client.select("inbox")[0] == "OK"
    assert client.status("InBoX", "(MESSAGES)")[0] == "OK"
    client.logout()


# ---------------------------------------------------------------------- sessions see each other


def test_idle_sees_delivery_flags_and_expunge_from_other_sessions(imap_app):
    other = fill(imap_app, 2)
    watcher = connect(imap_app)
    watcher.select("INBOX")
    tag = watcher._new_tag().decode()
    watcher.send(f"{tag} IDLE\r\n".encode())
    assert watcher.readline().startswith(b"+")
    started = time.monotonic()
    deliver(imap_app)
    line = watcher.readline()
    assert line == b"* 3 EXISTS\r\n"
    assert time.monotonic() - started < 1.0
    watcher.readline()  # RECENT
    other.store("1", "+FLAGS", "(\\Flagged)")
    assert b"FETCH" in watcher.readline()
    other.store("2", "+FLAGS.SILENT", "(\\Deleted)")
    other.expunge()
    lines = [watcher.readline(), watcher.readline()]
    assert b"* 2 EXPUNGE\r\n" in lines
    watcher.send(b"DONE\r\n")
    while not (line := watcher.readline()).startswith(tag.encode()):
        pass
    assert b"OK" in line
    assert watcher.search(None, "ALL")[1] == [b"1 2"]


def test_noop_reports_changes_with_consistent_numbers(imap_app):
    a = fill(imap_app, 3)
    b = connect(imap_app)
    b.select("INBOX")
    a.store("1:3", "+FLAGS.SILENT", "(\\Deleted)")
    a.expunge()
    a.append("INBOX", None, None, message("new"))
    typ, data = b.noop()
    untagged = b.untagged_responses
    assert untagged.get("EXPUNGE") == [b"3", b"2", b"1"]
    assert untagged.get("EXISTS")[-1] == b"1"  # imaplib keeps SELECT's EXISTS too
    assert b.fetch("1", "(UID)")[1] == [b"1 (UID 4)"]


# ---------------------------------------------------------------------- extensions


def test_capabilities_after_login(imap_app):
    client = connect(imap_app)
    caps = client.capability()[1][0].split()
    for cap in (b"IDLE", b"UIDPLUS", b"MOVE", b"NAMESPACE", b"ID", b"ENABLE", b"UNSELECT", b"SPECIAL-USE",
                b"CHILDREN", b"LITERAL+", b"SASL-IR", b"SORT", b"THREAD=REFERENCES", b"THREAD=ORDEREDSUBJECT", b"CONDSTORE"):
        assert cap in caps
    assert client.namespace()[1] == [b'(("" "/")) NIL NIL']
    client.logout()


def test_sort_and_thread(imap_app):
    client = connect(imap_app)
    client.append("INBOX", None, None, message("b topic", extra="Message-ID: <1@x>\r\n"))
    client.append("INBOX", None, None, message("Re: a topic", extra="Message-ID: <2@x>\r\nReferences: <3@x>\r\n"))
    client.append("INBOX", None, None, message("a topic", extra="Message-ID: <3@x>\r\n"))
    client.select("INBOX")
    assert client.sort("(SUBJECT)", "UTF-8", "ALL")[1] == [b"2 3 1"] or client.sort("(SUBJECT)", "UTF-8", "ALL")[1] == [b"3 2 1"]
    assert client.sort("(REVERSE ARRIVAL)", "UTF-8", "ALL")[1] == [b"3 2 1"]
    typ, data = client.thread("REFERENCES", "UTF-8", "ALL")
    assert typ == "OK" and b"(3 2)" in data[0]
    client.logout()


def test_condstore_changedsince_and_unchangedsince(imap_app):
    client = fill(imap_app, 3)
    client.unselect()
    typ, data = client._simple_command("ENABLE", "CONDSTORE")
    assert client.untagged_responses.pop("ENABLED") == [b"CONDSTORE"]
    typ, data = client.select("INBOX")
    highest = int(client.untagged_responses["HIGHESTMODSEQ"][0])
    client.store("2", "+FLAGS", "(\\Seen)")
    typ, data = client.fetch("1:*", f"(FLAGS) (CHANGEDSINCE {highest})")
    assert len([d for d in data if d]) == 1 and b"MODSEQ" in data[0]
    typ, data = client._simple_command("STORE", "1:3", f"(UNCHANGEDSINCE {highest})", "+FLAGS", "(\\Answered)")
    assert b"MODIFIED 2" in client.untagged_responses.get("OK", [b""])[-1] or typ == "OK"
    client.logout()


def test_unselect_keeps_deleted_messages(imap_app):
    client = fill(imap_app, 1)
    client.store("1", "+FLAGS", "(\\Deleted)")
    assert client.unselect()[0] == "OK"
    assert client.select("INBOX")[1] == [b"1"]
    assert client.close()[0] == "OK"
    assert client.select("INBOX")[1] == [b"0"]


# ---------------------------------------------------------------------- bad input


def test_bad_commands_get_bad_and_server_goes_on(imap_app):
    sock = socket.create_connection(("127.0.0.1", imap_app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    assert f.readline().startswith(b"* OK")
    for line, expect in [
        (b"a1 FROB\r\n", b"a1 BAD"),
        (b"a2 SELECT INBOX\r\n", b"a2 BAD"),  # not logged in
        (b"a3 LOGIN\r\n", b"a3 BAD"),
        (b"a4 " + b"X" * 100_000 + b"\r\n", b"a4 BAD"),
        (b"a5 NOOP\r\n", b"a5 OK"),
    ]:
        sock.sendall(line)
        assert f.readline().startswith(expect), line[:20]
    sock.sendall(b"a6 LOGIN {999999999}\r\n")
    reply = f.readline()
    assert reply.startswith(b"a6 BAD") or reply.startswith(b"a6 NO")
    sock.sendall(b"a7 NOOP\r\n")
    assert f.readline().startswith(b"a7 OK")
    sock.close()


def test_literals_sync_and_nonsync_pipelined(imap_app):
    sock = socket.create_connection(("127.0.0.1", imap_app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    user = USER.encode()
    sock.sendall(b"a LOGIN {%d+}\r\n%s {%d}\r\n" % (len(user), user, len(PASSWORD)))
    assert f.readline().startswith(b"+")
    sock.sendall(PASSWORD.encode() + b"\r\nb SELECT INBOX\r\nc NOOP\r\n")
    lines = []
    while not (line := f.readline()).startswith(b"c "):
        lines.append(line)
    assert any(l.startswith(b"a OK") for l in lines) and any(l.startswith(b"b OK") for l in lines)
    sock.close()


# ---------------------------------------------------------------------- found in review


def raw_session(app):
    sock = socket.create_connection(("127.0.0.1", app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    f.readline()

    def command(tag: bytes, text: bytes) -> list[bytes]:
        sock.sendall(tag + b" " + text + b"\r\n")
        lines = []
        while not (line := f.readline()).startswith(tag + b" "):
            lines.append(line)
        return lines + [line]

    command(b"l", b'LOGIN user@example.com "%s"' % PASSWORD.encode())
    return sock, command


def test_silent_store_sends_no_fetch_and_keywords_ignore_case(imap_app):
    fill(imap_app, 1).logout()
    sock, command = raw_session(imap_app)
    command(b"s", b"SELECT INBOX")
    assert command(b"a", b"STORE 1 +FLAGS.SILENT (\\Flagged)") == [b"a OK STORE completed\r\n"]
    lines = command(b"b", b"STORE 1 +FLAGS (foo Foo FOO)")
    assert lines[0] == b"* 1 FETCH (UID 1 FLAGS (\\Flagged foo))\r\n"
    sock.close()


def test_fetch_1_star_on_an_empty_folder_is_ok_and_thread_of_nothing_has_no_space(imap_app):
    sock, command = raw_session(imap_app)
    command(b"s", b"SELECT INBOX")
    assert command(b"a", b"FETCH 1:* (FLAGS)") == [b"a OK FETCH completed\r\n"]
    assert command(b"b", b"FETCH 2 (FLAGS)")[-1].startswith(b"b BAD")
    assert command(b"c", b"THREAD ORDEREDSUBJECT UTF-8 ALL") == [b"* THREAD\r\n", b"c OK THREAD completed\r\n"]
    sock.close()


def test_inbox_as_first_level_is_case_insensitive_too(imap_app):
    client = connect(imap_app)
    assert client.create("inbox/sub")[0] == "OK"
    typ, data = client.list('""', "*")
    assert b'(\\HasNoChildren) "/" INBOX/sub' in data
    assert not any(line.endswith(b'"/" inbox') for line in data)
    assert client.select("Inbox/Sub")[0] == "NO"  # only the first level ignores case
    client.logout()


def test_login_deadline_is_not_extended_by_chatter(imap_app, monkeypatch):
    import mailappliance.servers.imap as imap_server

    monkeypatch.setattr(imap_server, "LOGIN_TIMEOUT", 1.0)
    sock = socket.create_connection(("127.0.0.1", imap_app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    lines = []
    started = time.monotonic()
    for i in range(8):
        try:
            sock.sendall(b"n%d NOOP\r\n" % i)
        except OSError:
            break
        lines.append(f.readline())
        if lines[-1].startswith(b"* BYE"):
            break
        time.sleep(0.25)
    assert any(line.startswith(b"* BYE Autologout") for line in lines)
    assert time.monotonic() - started < 3


def test_tls_ends_with_close_notify_after_logout(imap_app):
    """Clients such as openssl s_client report an unexpected EOF otherwise."""
    context = ssl._create_unverified_context()
    raw = socket.create_connection(("127.0.0.1", imap_app.ports["imaps"]), timeout=10)
    sock = context.wrap_socket(raw, suppress_ragged_eofs=False)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"a LOGOUT\r\n")
    assert f.readline().startswith(b"* BYE") and f.readline().startswith(b"a OK")
    assert sock.recv(100) == b""  # a clean TLS close, not SSLEOFError
    sock.close()


def test_the_remaining_commands_and_fetch_forms(imap_app):
    """EXAMINE, CHECK, SUBSCRIBE, ID, the fetch macros and RFC822 forms, UID COPY/STORE,
    date/size/header/text searches, DELETE of a folder with children."""
    client = connect(imap_app)
    raw = message("forms", "the quick brown fox", extra="X-Tag: alpha\r\n")
    client.append("INBOX", "(\\Seen)", imaplib.Time2Internaldate(datetime(2026, 1, 15, tzinfo=timezone.utc)), raw)
    client.append("INBOX", None, None, message("other", "lazy dog " * 50))
    typ, data = client.xatom("ID", '("name" "pytest")')
    assert typ == "OK" and client.untagged_responses.pop("ID") == [b'("name" "mailappliance")']
    typ, data = client.select("INBOX", readonly=True)  # EXAMINE
    assert typ == "OK" and client.untagged_responses.pop("READ-ONLY") == [b""]
    assert client.check()[0] == "OK"
    typ, data = client.fetch("1", "(RFC822.HEADER RFC822.TEXT)")
    assert data[0][1].endswith(b"\r\n\r\n") and data[1][1] == b"the quick brown fox\r\n"
    typ, data = client.fetch("1", "RFC822")
    assert data[0][1] == raw
    for macro, items in (("FAST", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE"]),
                         ("ALL", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE"]),
                         ("FULL", [b"FLAGS", b"INTERNALDATE", b"RFC822.SIZE", b"ENVELOPE", b"BODY ("])):
        typ, data = client.fetch("1", macro)
        assert all(item in data[0] for item in items), (macro, data)
    assert client.search(None, "BEFORE", "16-Jan-2026")[1] == [b"1"]
    assert client.search(None, "SINCE", "16-Jan-2026")[1] == [b"2"]
    assert client.search(None, "SENTON", "2-Nov-2026")[1] == [b"1 2"]
    assert client.search(None, "LARGER", "300")[1] == [b"2"]
    assert client.search(None, "HEADER", "X-Tag", "alpha")[1] == [b"1"]
    assert client.search(None, "TEXT", "brown")[1] == [b"1"]
    assert client.search(None, "SEEN", "NOT", "LARGER", "300")[1] == [b"1"]
    typ, data = client.store("1", "+FLAGS", "(\\Flagged)")
    assert typ == "NO"  # read-only
    client.select("INBOX")
    assert client.uid("STORE", "2", "+FLAGS", "(\\Answered)")[0] == "OK"
    client.create("Box/Child")
    assert client.uid("COPY", "1:2", "Box")[0] == "OK"  # (imaplib drops COPYUID of UID COPY)
    assert client.subscribe("Box")[0] == "OK"
    assert client.delete("Box")[0] == "OK"  # has a child: loses its messages, becomes \Noselect
    typ, data = client.list('""', "Box*")
    assert b'(\\Noselect \\HasChildren) "/" Box' in data
    assert client.select("Box")[0] == "NO"
    assert client.create("Box")[0] == "OK"  # selectable again
    assert client.select("Box")[1] == [b"0"]
    client.logout()


def test_hostile_input_leaves_stored_mail_as_it_was(imap_app):
    fill(imap_app, 2).logout()
    before = connect(imap_app)
    before.select("INBOX")
    stored = before.fetch("1:*", "(UID FLAGS BODY.PEEK[])")[1]
    sock, command = raw_session(imap_app)
    command(b"e", b"EXAMINE INBOX")
    for tag, text, expect in [
        (b"a", b"STORE 1:* FLAGS (\\Deleted)", b"a NO"),
        (b"b", b"EXPUNGE", b"b NO"),
        (b"c", b"FETCH 99999999999 (FLAGS)", b"c BAD"),
        (b"d", b"FETCH 1 (BODY[1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21])", b"d OK"),
        (b"f", b"SEARCH " + b"(" * 200 + b"ALL" + b")" * 200, b"f BAD"),
        (b"g", b"UID FETCH 1:4294967295 (FLAGS)", b"g OK"),
        (b"h", b"SELECT INBOX\x00", b"h BAD"),
        (b"i", b"COPY 1:* \"" + b"x" * 300 + b"\"", b"i NO"),
    ]:
        assert command(tag, text)[-1].startswith(expect), (tag, command)
    sock.sendall(b"j APPEND INBOX {%d+}\r\n" % (imap_app.settings.max_email_size + 10))
    sock.sendall(b"x" * (imap_app.settings.max_email_size + 10) + b"\r\n")
    assert command(b"k", b"NOOP")[-2:][0].startswith(b"j NO [TOOBIG]")
    sock.close()
    after = fill(imap_app, 0)
    assert after.fetch("1:*", "(UID FLAGS BODY.PEEK[])")[1] == stored
    after.logout()
