"""IMAP at scale: a 20,000-message folder, and 500 simultaneous connections with 50 in IDLE."""
import imaplib
import smtplib
import socket
import time
from datetime import datetime, timezone

import gevent
from bson import ObjectId

from tests.conftest import PASSWORD

USER = "user@example.com"


def test_large_folder_select_fetch_flags_and_uid_search_never_read_raw(appliance_factory):
    """20,000 messages stored without any raw bytes: had SELECT, FETCH 1:* (FLAGS UID) or UID SEARCH
    on flags read a single raw message, they would fail (the bytes are not there)."""
    app = appliance_factory(allow_plaintext_auth=True)
    app.admin.create(USER, PASSWORD)
    c = app.stores.collections
    inbox = app.stores.folders.get(USER, "INBOX")
    n = 20_000
    r = app.stores.folders.reserve(inbox["_id"], n, size=100 * n, unseen=n // 2)
    now = datetime.now(timezone.utc)
    docs = [
        {
            "_id": ObjectId(), "folder": inbox["_id"], "mailbox": USER, "uid": r.first_uid + i,
            "modseq": r.first_modseq + i, "flags": ["\\Seen"] if i % 2 else [], "size": 100,
            "blob": ObjectId(), "internal_date": now, "envelope": {}, "structure": {},
        }
        for i in range(n)
    ]
    for start in range(0, n, 5000):
        c.messages.insert_many(docs[start:start + 5000], ordered=False)
    app.stores.folders.release([inbox["_id"]], r.token)

    client = imaplib.IMAP4("127.0.0.1", app.ports["imap"], timeout=60)
    client.login(USER, PASSWORD)
    started = time.monotonic()
    typ, data = client.select("INBOX")
    select_seconds = time.monotonic() - started
    assert data == [str(n).encode()]
    assert client.untagged_responses.get("UNSEEN") == [b"1"]
    started = time.monotonic()
    typ, data = client.fetch("1:*", "(FLAGS UID)")
    fetch_seconds = time.monotonic() - started
    assert typ == "OK" and len(data) == n
    assert data[-1] == b"%d (FLAGS (\\Seen \\Recent) UID %d)" % (n, n)
    typ, data = client.uid("SEARCH", None, "UNSEEN", "UID", "1:100")
    assert data[0].split() == [str(u).encode() for u in range(1, 101, 2)]
    typ, data = client.uid("SEARCH", None, "SEEN")
    assert len(data[0].split()) == n // 2
    # A second SELECT (any session of this process) reads only what changed since.
    full_reads = app.imap.index.full_reads
    started = time.monotonic()
    assert client.select("INBOX")[1] == [str(n).encode()]
    reselect_seconds = time.monotonic() - started
    assert app.imap.index.full_reads == full_reads
    print(f"20k folder: SELECT {select_seconds:.2f} s, again {reselect_seconds:.3f} s, FETCH 1:* (FLAGS UID) {fetch_seconds:.2f} s")
    client.logout()


def test_500_connections_50_idle_while_mail_arrives(appliance_factory):
    app = appliance_factory(allow_plaintext_auth=True)
    app.admin.create(USER, PASSWORD)
    port = app.ports["imap"]

    def open_client(i: int):
        sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        f = sock.makefile("rb")
        assert f.readline().startswith(b"* OK")
        sock.sendall(b"a LOGIN %s \"%s\"\r\n" % (USER.encode(), PASSWORD.encode()))
        while not (line := f.readline()).startswith(b"a "):
            pass
        assert line.startswith(b"a OK"), line
        return sock, f

    clients = [None] * 500
    pool = [gevent.spawn(lambda i=i: clients.__setitem__(i, open_client(i))) for i in range(500)]
    gevent.joinall(pool, raise_error=True)
    assert app.imap.sessions == 500
    idlers = clients[:50]
    for sock, f in idlers:
        sock.sendall(b"s SELECT INBOX\r\n")
        while not (line := f.readline()).startswith(b"s "):
            pass
        assert line.startswith(b"s OK")
        sock.sendall(b"i IDLE\r\n")
        assert f.readline().startswith(b"+")

    with smtplib.SMTP("127.0.0.1", app.ports["smtp"], timeout=30) as smtp:
        for k in range(3):
            smtp.sendmail("a@example.com", [USER], b"Subject: %d\r\n\r\nhi\r\n" % k)

    def exists_seen(sock, f):
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            line = f.readline()
            if line == b"* 3 EXISTS\r\n":
                return True
        return False

    results = [gevent.spawn(exists_seen, s, f) for s, f in idlers]
    gevent.joinall(results)
    assert all(g.value for g in results)
    # The 450 others still answer.
    for sock, f in clients[50:60]:
        sock.sendall(b"n NOOP\r\n")
        assert f.readline().startswith(b"n OK")
    for sock, f in idlers:
        sock.sendall(b"DONE\r\n")
    for sock, _ in clients:
        sock.close()
