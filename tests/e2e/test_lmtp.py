"""LMTP over real sockets (RFC 2033): per-recipient replies, quota, TLS on the LMTPS port."""
import smtplib

from tests.conftest import PASSWORD
from tests.e2e.helpers import RawClient, client_tls, stored_messages, stored_raw


def test_lmtp_mixed_recipients_one_reply_each(appliance):
    appliance.admin.create("user@example.com", PASSWORD)
    appliance.admin.create("full@example.com", PASSWORD, quota=100)
    appliance.admin.create("other@test.com", PASSWORD)
    client = RawClient(appliance.ports["lmtp"])
    assert "LMTP" in client.reply()[1]
    assert client.cmd("LHLO mda.example")[0] == 250
    assert client.cmd("MAIL FROM:<a@remote.example>")[0] == 250
    assert client.cmd("RCPT TO:<user@example.com>")[0] == 250
    assert client.cmd("RCPT TO:<nobody@example.com>")[0] == 550
    assert client.cmd("RCPT TO:<full@example.com>")[0] == 250
    assert client.cmd("RCPT TO:<other@test.com>")[0] == 250
    assert client.cmd("RCPT TO:<far@elsewhere.example>")[0] == 554, "LMTP does not relay"
    assert client.cmd("DATA")[0] == 354
    client.send(b"Subject: lmtp\r\n\r\n" + b"x" * 200 + b"\r\n.\r\n")
    replies = [client.reply() for _ in range(3)]
    assert [code for code, _ in replies] == [250, 552, 250]
    assert replies[0][1].startswith("2.0.0 <user@example.com>")
    assert replies[1][1] == "5.2.2 Mailbox full"
    assert client.cmd("QUIT")[0] == 221
    assert len(stored_messages(appliance, "user@example.com")) == 1
    assert len(stored_messages(appliance, "other@test.com")) == 1
    assert stored_messages(appliance, "full@example.com") == []
    incoming = appliance.stores.collections.incoming.find_one()
    assert incoming["source"] == "lmtp" and incoming["local_recipients"] == ["user@example.com", "other@test.com"]


def test_smtplib_lmtp_client(appliance):
    appliance.admin.create("user@example.com", PASSWORD)
    client = smtplib.LMTP("127.0.0.1", appliance.ports["lmtp"])
    try:
        refused = client.sendmail("a@remote.example", ["user@example.com", "ghost@example.com"], b"Subject: via smtplib\r\n\r\nhi\r\n")
        assert list(refused) == ["ghost@example.com"] and refused["ghost@example.com"][0] == 550
    finally:
        client.quit()
    [message] = stored_messages(appliance, "user@example.com")
    assert b"with LMTP id" in stored_raw(appliance, message)


def test_lmtp_starttls_and_implicit_tls(appliance):
    appliance.admin.create("user@example.com", PASSWORD)
    context = client_tls(appliance)
    client = smtplib.LMTP("127.0.0.1", appliance.ports["lmtp"])
    client.ehlo_or_helo_if_needed()
    assert client.has_extn("starttls")
    client.starttls(context=context)
    client.sendmail("a@remote.example", ["user@example.com"], b"Subject: starttls\r\n\r\nhi\r\n")
    client.quit()
    raw = RawClient(appliance.ports["lmtps"])
    raw.sock = context.wrap_socket(raw.sock)
    assert raw.reply()[0] == 220
    raw.cmd("LHLO c")
    raw.cmd("MAIL FROM:<a@remote.example>")
    raw.cmd("RCPT TO:<user@example.com>")
    raw.cmd("DATA")
    raw.send(b"Subject: lmtps\r\n\r\nhi\r\n.\r\n")
    assert raw.reply()[0] == 250
    raw.close()
    raws = [stored_raw(appliance, m) for m in stored_messages(appliance, "user@example.com")]
    assert [b"with LMTPS" in r for r in raws] == [True, True]
