"""Hostile or unlucky input must not stop the appliance from storing the next message."""
import time

import gevent

from tests.conftest import PASSWORD
from tests.e2e.helpers import RawClient, stored_messages


def send(port, body: bytes, rcpts=("user@example.com",), lhlo=False):
    client = RawClient(port)
    client.reply()
    client.cmd(("LHLO" if lhlo else "EHLO") + " c.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    for rcpt in rcpts:
        client.cmd(f"RCPT TO:<{rcpt}>")
    client.cmd("DATA")
    client.send(body + b"\r\n.\r\n")
    replies = [client.reply() for _ in (rcpts if lhlo else [1])]
    client.close()
    return replies


def normal_mail_still_works(appliance, expected_count):
    [(code, _)] = send(appliance.ports["smtp"], b"Subject: normal\r\n\r\nhello")
    assert code == 250
    assert len(stored_messages(appliance, "user@example.com")) == expected_count


def test_nul_in_a_mime_parameter_name(appliance, mailbox):
    body = b"Subject: nul\r\nContent-Type: text/plain; a\x00b=c; charset=utf-8\r\n\r\nx"
    [(code, _)] = send(appliance.ports["smtp"], body)
    assert code == 250
    [message] = stored_messages(appliance, mailbox)
    assert message["structure"]["params"] == [["a\x00b", "c"], ["charset", "utf-8"]]
    normal_mail_still_works(appliance, 2)


def test_hundred_thousand_parts_are_stored_opaque_without_freezing(appliance, mailbox):
    parts = b"".join(b"--b\r\n\r\nx\r\n" for _ in range(100_000))
    body = b"Subject: parts\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--"
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(time.monotonic()) or gevent.sleep(0.05) for _ in iter(int, 1)])
    try:
        [(code, _)] = send(appliance.ports["smtp"], body)
    finally:
        ticker.kill()
    assert code == 250
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert max(gaps) < 1.0, "the hub kept serving while the message was handled"
    [message] = stored_messages(appliance, mailbox)
    assert message["structure"]["opaque"].startswith("more than")
    normal_mail_still_works(appliance, 2)


def test_mailbox_deleted_between_rcpt_and_data_lmtp(appliance):
    for name in ("u1", "u2"):
        appliance.admin.create(f"{name}@example.com", PASSWORD)
    client = RawClient(appliance.ports["lmtp"])
    client.reply()
    client.cmd("LHLO c.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    assert client.cmd("RCPT TO:<u1@example.com>")[0] == 250
    assert client.cmd("RCPT TO:<u2@example.com>")[0] == 250
    appliance.admin.delete("u2@example.com")
    client.cmd("DATA")
    client.send(b"Subject: race\r\n\r\nbody\r\n.\r\n")
    assert [client.reply()[0], client.reply()[0]] == [250, 550]
    client.close()
    [message] = stored_messages(appliance, "u1@example.com")
    folder = appliance.stores.collections.folders.find_one({"_id": message["folder"]})
    assert (folder["messages"], folder["unseen"], folder["bytes"]) == (1, 1, message["size"])


def test_mailbox_deleted_between_rcpt_and_data_smtp_is_all_or_nothing(appliance):
    for name in ("u1", "u2"):
        appliance.admin.create(f"{name}@example.com", PASSWORD)
    inbox = appliance.stores.mailboxes.get("u1@example.com")["inbox"]
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO c.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<u1@example.com>")
    client.cmd("RCPT TO:<u2@example.com>")
    appliance.admin.delete("u2@example.com")
    client.cmd("DATA")
    client.send(b"Subject: race\r\n\r\nbody\r\n.\r\n")
    assert client.reply()[0] == 451, "the sender retries; then RCPT says 550 for u2"
    client.close()
    assert stored_messages(appliance, "u1@example.com") == []
    folder = appliance.stores.collections.folders.find_one({"_id": inbox})
    assert (folder["messages"], folder["unseen"], folder["bytes"]) == (0, 0, 0)
    assert appliance.stores.collections.incoming.count_documents({}) == 0
    assert appliance.stores.collections.raw.count_documents({}) == 0
