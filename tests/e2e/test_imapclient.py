"""IMAP with imapclient: what a full-featured client library does (IDLE, CONDSTORE, MOVE,
UTF-7 folder names, multipart FETCH), plus two appliances sharing one database."""
import socket
import smtplib
import time
from email.message import EmailMessage

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError

import mailappliance.servers.imap as imap_server
from tests.conftest import PASSWORD

USER = "user@example.com"


@pytest.fixture
def app(appliance_factory):
    a = appliance_factory(allow_plaintext_auth=True)
    a.admin.create(USER, PASSWORD)
    return a


def client(app) -> IMAPClient:
    c = IMAPClient("127.0.0.1", port=app.ports["imap"], ssl=False, timeout=10)
    c.login(USER, PASSWORD)
    return c


def multipart() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ann <ann@example.com>"
    msg["To"] = USER
    msg["Subject"] = "=?utf-8?q?caf=C3=A9?= report"
    msg["Message-ID"] = "<r1@example.com>"
    msg.set_content("plain body\n")
    msg.add_alternative("<p>html body</p>\n", subtype="html")
    msg.add_attachment(b"\x00\x01binary", maintype="application", subtype="octet-stream", filename="data.bin")
    inner = EmailMessage()
    inner["Subject"] = "inner"
    inner.set_content("inner text\n")
    msg.add_attachment(inner)
    return msg.as_bytes().replace(b"\n", b"\r\n")


def wait_for(watcher: IMAPClient, response, seconds: float = 5.0) -> bool:
    """Read IDLE responses until ``response`` arrives (other updates may come first)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if response in watcher.idle_check(timeout=max(0.1, deadline - time.monotonic())):
            return True
    return False


def test_multipart_fetch_sections_structure_and_envelope(app):
    c = client(app)
    raw = multipart()
    c.append("INBOX", raw)
    c.select_folder("INBOX")
    data = c.fetch([1], ["BODY.PEEK[]", "RFC822.SIZE", "BODYSTRUCTURE", "ENVELOPE", "BODY.PEEK[1.1]", "BODY.PEEK[2]<0.4>",
                         "BODY.PEEK[3.HEADER]", "BODY.PEEK[3.TEXT]", "BODY.PEEK[1.MIME]", "RFC822.HEADER"])[1]
    assert data[b"BODY[]"] == raw and data[b"RFC822.SIZE"] == len(raw)
    assert data[b"BODY[1.1]"] == b"plain body\r\n"
    assert data[b"BODY[2]<0>"] == b"AAFi"  # base64 of the attachment, first 4 octets
    assert b"Subject: inner" in data[b"BODY[3.HEADER]"] and data[b"BODY[3.TEXT]"] == b"inner text\r\n"
    assert data[b"BODY[1.MIME]"].startswith(b"Content-Type: multipart/alternative")
    assert data[b"RFC822.HEADER"].endswith(b"\r\n\r\n")
    envelope = data[b"ENVELOPE"]
    assert envelope.subject == b"=?utf-8?q?caf=C3=A9?= report" and envelope.from_[0].mailbox == b"ann"
    structure = data[b"BODYSTRUCTURE"]
    assert structure.is_multipart and structure[0][0].is_multipart  # alternative inside mixed
    assert structure[1].lower() == b"mixed"
    assert set(c.get_flags([1])[1]) == {b"\\Recent"}  # this session is the first to see it
    c.fetch([1], ["BODY[TEXT]"])  # not PEEK: sets \Seen
    assert set(c.get_flags([1])[1]) == {b"\\Seen", b"\\Recent"}
    c.logout()


def test_utf7_folder_names_round_trip(app):
    c = client(app)
    c.create_folder("Café/Überweisungen")
    names = [name for _, _, name in c.list_folders()]
    assert "Café/Überweisungen" in names and "Café" in names
    c.select_folder("Café/Überweisungen")
    c.rename_folder("Café", "Kaffee")
    assert "Kaffee/Überweisungen" in [name for _, _, name in c.list_folders()]
    c.logout()


def test_special_use_and_children(app):
    c = client(app)
    c.create_folder("Archive/2026")
    folders = {name: flags for flags, _, name in c.list_folders()}
    assert b"\\Sent" in folders["Sent"] and b"\\Trash" in folders["Trash"] and b"\\Drafts" in folders["Drafts"]
    assert b"\\Junk" in folders["Junk"]
    assert b"\\HasChildren" in folders["Archive"] and b"\\HasNoChildren" in folders["Archive/2026"]
    assert c.find_special_folder(b"\\Sent") == "Sent"
    c.logout()


def test_idle_two_clients(app):
    watcher, other = client(app), client(app)
    watcher.select_folder("INBOX")
    other.select_folder("INBOX")
    watcher.idle()
    other.append("INBOX", b"Subject: one\r\n\r\nx\r\n")
    responses = watcher.idle_check(timeout=5)
    assert (1, b"EXISTS") in responses
    other.noop()
    other.add_flags([1], [b"\\Flagged"])
    responses = watcher.idle_check(timeout=5)
    assert any(r[1] == b"FETCH" for r in responses)
    other.delete_messages([1])
    other.expunge()
    assert wait_for(watcher, (1, b"EXPUNGE"))
    watcher.idle_done()
    assert watcher.search() == []
    watcher.logout()
    other.logout()


def test_smtp_delivery_reaches_idle_within_a_second(app):
    watcher = client(app)
    watcher.select_folder("INBOX")
    watcher.idle()
    started = time.monotonic()
    with smtplib.SMTP("127.0.0.1", app.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("a@example.com", [USER], b"Subject: hi\r\n\r\nhello\r\n")
    responses = watcher.idle_check(timeout=5)
    assert (1, b"EXISTS") in responses and time.monotonic() - started < 1.0
    watcher.idle_done()
    watcher.logout()


def test_another_appliance_process_sharing_the_database(app, appliance_factory):
    """A second appliance (its own stores, caches and writer) on the same database."""
    second = appliance_factory(allow_plaintext_auth=True)
    watcher = client(app)
    watcher.select_folder("INBOX")
    watcher.idle()
    with smtplib.SMTP("127.0.0.1", second.ports["smtp"], timeout=10) as smtp:
        smtp.sendmail("a@example.com", [USER], b"Subject: via the other process\r\n\r\nhello\r\n")
    assert wait_for(watcher, (1, b"EXISTS"))
    other = IMAPClient("127.0.0.1", port=second.ports["imap"], ssl=False, timeout=10)
    other.login(USER, PASSWORD)
    other.select_folder("INBOX")
    other.add_flags([1], [b"$Important"])
    responses = watcher.idle_check(timeout=5)
    assert any(r[1] == b"FETCH" and b"$Important" in r[2][r[2].index(b"FLAGS") + 1] for r in responses)
    other.copy([1], "Trash")
    other.delete_messages([1])
    other.expunge()
    assert wait_for(watcher, (1, b"EXPUNGE"))
    watcher.idle_done()
    watcher.select_folder("Trash")
    assert len(watcher.search()) == 1
    watcher.logout()
    other.logout()


def test_condstore_and_move_with_uidplus(app):
    c = client(app)
    for i in range(3):
        c.append("INBOX", f"Subject: {i}\r\n\r\nbody\r\n".encode())
    c.enable("CONDSTORE")
    info = c.select_folder("INBOX")
    modseq = info[b"HIGHESTMODSEQ"]
    c.add_flags([2], [b"\\Answered"])
    changed = c.fetch([1, 2, 3], ["FLAGS"], modifiers=[f"CHANGEDSINCE {modseq}"])
    assert list(changed) == [2] and changed[2][b"MODSEQ"][0] > modseq
    assert c.search(["MODSEQ", modseq + 1]) == [2]
    c.create_folder("Archive")
    c.move([1, 3], "Archive")  # imapclient speaks UIDs
    assert c.search() == [2]
    c.select_folder("Archive")
    assert c.search() == [1, 2]
    c.logout()


def test_sort_thread_and_esearch(app):
    c = client(app)
    c.append("INBOX", b"Subject: Re: beta\r\nMessage-ID: <b@x>\r\nIn-Reply-To: <a@x>\r\n\r\n2\r\n")
    c.append("INBOX", b"Subject: alpha\r\nMessage-ID: <a@x>\r\n\r\n1\r\n")
    c.append("INBOX", b"Subject: gamma\r\nMessage-ID: <c@x>\r\n\r\n3\r\n")
    c.select_folder("INBOX")
    assert c.sort(["SUBJECT"]) == [2, 1, 3]
    assert c.sort(["REVERSE", "SUBJECT"]) == [3, 1, 2]
    threads = c.thread("REFERENCES")
    assert (2, 1) in threads and (3,) in threads
    typ, data = c._imap._simple_command("SEARCH", "RETURN", "(MIN MAX COUNT)", "ALL")
    assert b"MIN 1 MAX 3 COUNT 3" in c._imap.untagged_responses["ESEARCH"][0]
    c.logout()


def test_failed_logins_lock_out_the_address_for_a_while(app):
    guard = app.imap.guard
    guard.limits["address"] = 3
    for _ in range(3):
        c = IMAPClient("127.0.0.1", port=app.ports["imap"], ssl=False, timeout=10)
        with pytest.raises(LoginError):
            c.login(USER, "not the password")
    c = IMAPClient("127.0.0.1", port=app.ports["imap"], ssl=False, timeout=10)
    with pytest.raises(LoginError, match="UNAVAILABLE"):
        c.login(USER, PASSWORD)  # even the right password, for now
    guard._locked.clear()
    assert c.login(USER, PASSWORD)


def test_autologout_and_oversized_literal(app, monkeypatch):
    monkeypatch.setattr(imap_server, "LOGIN_TIMEOUT", 0.5)
    sock = socket.create_connection(("127.0.0.1", app.ports["imap"]), timeout=10)
    f = sock.makefile("rb")
    f.readline()
    sock.sendall(b"a APPEND INBOX {%d}\r\n" % (app.settings.max_email_size + 1))
    assert f.readline().startswith(b"a NO [TOOBIG]")
    assert f.readline().startswith(b"* BYE Autologout")
    sock.close()


def test_append_over_quota_is_overquota(app):
    app.stores.collections.mailboxes.update_one({"_id": USER}, {"$set": {"quota": 100}})
    c = client(app)
    with pytest.raises(IMAPClientError, match="OVERQUOTA"):
        c.append("INBOX", b"Subject: big\r\n\r\n" + b"x" * 200 + b"\r\n")
    c.logout()
