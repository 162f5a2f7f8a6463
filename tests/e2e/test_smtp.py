"""SMTP over real sockets with smtplib: the three port roles, TLS, AUTH, relay policy, storage."""
import smtplib
from email.message import EmailMessage

import gevent
import pytest

from mailappliance.protocol.replies import S
from tests.conftest import PASSWORD
from tests.e2e.helpers import RawClient, client_tls, stored_messages, stored_raw


def rich_message() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Zoë Sender <zoe@remote.example>"
    msg["To"] = "user@example.com"
    msg["Subject"] = "Grüße aus Köln — 日本語 ✓"
    msg["Message-ID"] = "<rich-1@remote.example>"
    msg.set_content("Hallo Wörld\nsecond line\n.leading dot line\n")
    msg.add_attachment(b"%PDF-1.4 fake\x00\x01\x02" * 100, maintype="application", subtype="pdf", filename="bericht.pdf")
    msg.add_attachment("naïve,csv\n1,2\n", subtype="csv", filename="données.csv")
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def test_port25_delivers_byte_exact_with_trace_headers(appliance, mailbox):
    raw = rich_message()
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        client.ehlo("client.remote.example")
        assert "smtputf8" in client.esmtp_features and "pipelining" in client.esmtp_features
        refused = client.sendmail("zoe@remote.example", ["user@example.com"], raw, mail_options=["BODY=8BITMIME"])
        assert refused == {}
    [message] = stored_messages(appliance, mailbox)
    stored = stored_raw(appliance, message)
    assert stored.startswith(b"Return-Path: <zoe@remote.example>\r\nReceived: from client.remote.example ([127.0.0.1])")
    assert stored.endswith(raw), "the message is stored exactly as sent, after the trace headers"
    assert message["uid"] == 1 and message["size"] == len(stored) and message["flags"] == []
    assert message["subject"] == "Grüße aus Köln — 日本語 ✓"
    assert message["structure"]["type"] == "multipart" and len(message["structure"]["parts"]) == 3
    assert message["envelope"]["message_id"] == "<rich-1@remote.example>"
    incoming = appliance.stores.collections.incoming.find_one({"message_id": "<rich-1@remote.example>"})
    assert incoming["source"] == "smtp" and incoming["status"] == "stored"
    assert incoming["remote_address"] == "127.0.0.1" and incoming["local_port"] == appliance.ports["smtp"]
    assert [(a["filename"], a["contentType"]) for a in incoming["attachments"]] == [
        ("bericht.pdf", "application/pdf"),
        ("données.csv", "text/csv"),
    ]
    assert incoming["attachments"][0]["size"] == 1600  # decoded bytes, not base64


def test_unknown_local_user_and_relay_refused_for_strangers(appliance_factory):
    appliance = appliance_factory(relay_networks=[])
    appliance.admin.create("user@example.com", PASSWORD)
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO stranger.example")
    assert client.cmd("MAIL FROM:<x@stranger.example>")[0] == 250
    attempts = [
        "RCPT TO:<victim@elsewhere.example>",
        "RCPT TO:<@example.com:victim@elsewhere.example>",
        "RCPT TO:<victim%elsewhere.example@example.com>",
        'RCPT TO:<"victim@elsewhere.example"@example.com>',
        "RCPT TO:<victim@elsewhere.example@example.com>",
        "RCPT TO:<nobody@example.com>",
        "RCPT TO:<root@[127.0.0.1]>",
    ]
    codes = [client.cmd(line) for line in attempts]
    assert codes[0] == (554, "5.7.1 Relay access denied")
    assert codes[1][0] == 554
    assert codes[2][0] == 550 and codes[3][0] == 550, "stays local: no such mailbox"
    assert codes[4][0] == 501
    assert codes[5] == (550, "5.1.1 Recipient address rejected: no such mailbox")
    assert codes[6][0] == 554
    assert client.cmd("DATA")[0] == 554, "no valid recipients"
    client.close()
    assert appliance.stores.collections.outgoing.count_documents({}) == 0


def test_relay_networks_may_relay_and_it_is_queued(appliance, mailbox):
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        client.sendmail("app@example.com", ["user@example.com", "far@elsewhere.example"], b"Subject: both\r\n\r\nx\r\n")
    [queued] = list(appliance.stores.collections.outgoing.find())
    assert queued["status"] == "queued" and queued["to"] == ["far@elsewhere.example"]
    assert queued["recipients"] == [{"address": "far@elsewhere.example", "status": "queued", "attempts": 0}]
    relay_raw = stored_raw(appliance, queued)
    assert relay_raw.startswith(b"Received: ") and b"Return-Path" not in relay_raw
    assert len(stored_messages(appliance, mailbox)) == 1
    incoming = appliance.stores.collections.incoming.find_one()
    assert incoming["status"] == "stored+queued" and incoming["outgoing_id"] == queued["_id"]


def test_submission_starttls_auth_and_sender_ownership(appliance, mailbox):
    port = appliance.ports["submission"]
    with smtplib.SMTP("127.0.0.1", port) as client:
        client.ehlo()
        assert "auth" not in client.esmtp_features, "no AUTH offered in clear"
        code, _ = client.mail("user@example.com")
        assert code == 530
        client.rset()
        client.starttls(context=client_tls(appliance))
        client.ehlo()
        assert "PLAIN" in client.esmtp_features["auth"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as failed:
            client.login("user@example.com", "wrong password")
        assert failed.value.smtp_code == 535
        client.login("user@example.com", PASSWORD)
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.sendmail("ceo@example.com", ["far@elsewhere.example"], b"Subject: spoof\r\n\r\nx\r\n")
        assert refused.value.smtp_code == 553
        client.sendmail("user@example.com", ["far@elsewhere.example", "user@example.com"], b"Subject: out\r\n\r\nx\r\n")
    queued = appliance.stores.collections.outgoing.find_one()
    assert queued["authenticated_as"] == "user@example.com" and queued["source"] == "esmtpsa"
    [message] = stored_messages(appliance, mailbox)
    assert b"with ESMTPSA" in stored_raw(appliance, message)


def test_implicit_tls_port(appliance, mailbox):
    with smtplib.SMTP_SSL("127.0.0.1", appliance.ports["smtps"], context=client_tls(appliance)) as client:
        client.ehlo()
        assert "starttls" not in client.esmtp_features
        client.login("user@example.com", PASSWORD)
        client.sendmail("user@example.com", ["user@example.com"], b"Subject: self\r\n\r\nx\r\n")
    assert len(stored_messages(appliance, mailbox)) == 1
    assert appliance.servers[2].stats.tls_sessions == 1


def test_pipelined_transaction_gets_replies_in_order(appliance, mailbox):
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO pipe.example")
    client.send(
        b"MAIL FROM:<a@remote.example>\r\nRCPT TO:<user@example.com>\r\nRCPT TO:<nobody@example.com>\r\n"
        b"DATA\r\nSubject: piped\r\n\r\nbody\r\n.\r\nMAIL FROM:<b@remote.example>\r\nRCPT TO:<user@example.com>\r\n"
        b"DATA\r\nSubject: piped 2\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    codes = [client.reply()[0] for _ in range(9)]
    assert codes == [250, 250, 550, 354, 250, 250, 250, 354, 250]
    assert client.reply()[0] == 221
    assert [m["subject"] for m in stored_messages(appliance, mailbox)] == ["piped", "piped 2"]


def test_bad_input_gets_errors_and_the_session_goes_on(appliance, mailbox):
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    assert client.cmd("X" * 2000) == S_tuple(S.LINE_TOO_LONG)
    assert client.cmd("EHLO ok.example")[0] == 250
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<user@example.com>")
    assert client.cmd("DATA")[0] == 354
    client.send(b"Subject: long\r\n\r\n" + b"y" * 1500 + b"\r\n.\r\n")
    assert client.reply() == S_tuple(S.DATA_LINE_TOO_LONG)
    assert client.cmd("NOOP")[0] == 250
    client.close()
    # A bare LF (plain `nc`, or an SMTP-smuggling attempt) is answered at once, then
    # the connection is closed: the smuggled MAIL FROM is never read as a command.
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO ok.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<user@example.com>")
    client.cmd("DATA")
    client.send(b"Subject: smuggle\r\n\r\nhi\n.\nMAIL FROM:<evil@x.example>\r\nRCPT TO:<user@example.com>\r\nDATA\r\n")
    assert client.reply() == S_tuple(S.BARE_LINE_ENDING)
    assert client.closed()
    assert stored_messages(appliance, mailbox) == [], "nothing refused was stored"


def test_message_size_limit(appliance_factory):
    appliance = appliance_factory(max_email_size=20_000)
    appliance.admin.create("user@example.com", PASSWORD)
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        client.ehlo()
        assert client.esmtp_features["size"] == "20000"
        assert client.mail("a@remote.example", ["SIZE=30000"])[0] == 552
    # Without a SIZE announcement the limit is enforced while reading DATA.
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO c.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<user@example.com>")
    assert client.cmd("DATA")[0] == 354
    client.send(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 30 + b".\r\n")
    assert client.reply() == S_tuple(S.MESSAGE_TOO_BIG)
    assert client.cmd("NOOP")[0] == 250
    client.close()
    assert stored_messages(appliance, "user@example.com") == []


def test_bad_command_budget_then_421(appliance_factory):
    appliance = appliance_factory(max_bad_commands=3)
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("BAD1")
    client.cmd("BAD2")
    client.send(b"BAD3\r\n")
    assert client.reply()[0] == 500
    assert client.reply() == S_tuple(S.TOO_MANY_ERRORS)
    assert client.closed()


def test_idle_timeout(appliance_factory):
    appliance = appliance_factory(smtp_idle_timeout=0.5)
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    assert client.reply() == S_tuple(S.TIMEOUT)
    assert client.closed()


def test_disconnect_mid_data_stores_nothing(appliance, mailbox):
    client = RawClient(appliance.ports["smtp"])
    client.reply()
    client.cmd("EHLO c.example")
    client.cmd("MAIL FROM:<a@remote.example>")
    client.cmd("RCPT TO:<user@example.com>")
    client.cmd("DATA")
    client.send(b"Subject: half\r\n\r\nhalf a message")
    client.close()
    gevent.sleep(0.3)
    assert stored_messages(appliance, mailbox) == []
    assert appliance.stores.collections.incoming.count_documents({}) == 0


def test_twenty_concurrent_senders_fifty_messages_each(appliance, mailbox):
    port = appliance.ports["smtp"]

    def sender(n):
        with smtplib.SMTP("127.0.0.1", port) as client:
            for i in range(50):
                client.sendmail(f"s{n}@remote.example", ["user@example.com"], f"Subject: {n}-{i}\r\n\r\nbody {n} {i}\r\n".encode())

    gevent.joinall([gevent.spawn(sender, n) for n in range(20)], raise_error=True)
    messages = stored_messages(appliance, mailbox)
    assert len(messages) == 1000
    assert [m["uid"] for m in messages] == list(range(1, 1001)), "UIDs unique, consecutive, increasing"
    assert sorted(m["subject"] for m in messages) == sorted(f"{n}-{i}" for n in range(20) for i in range(50))
    folder = appliance.stores.collections.folders.find_one({"_id": messages[0]["folder"]})
    assert folder["uidnext"] == 1001
    assert appliance.writer.batches < 1000


def S_tuple(reply):
    code, text = reply.code, reply.lines[-1]
    return code, text


def test_postmaster_without_domain_reaches_the_primary_domain(appliance):
    appliance.admin.create("postmaster@example.com", PASSWORD)
    with smtplib.SMTP("127.0.0.1", appliance.ports["smtp"]) as client:
        client.ehlo()
        assert client.mail("a@remote.example")[0] == 250
        assert client.rcpt("<postmaster>")[0] == 250
        assert client.data(b"Subject: to postmaster\r\n\r\nhi\r\n")[0] == 250
    assert len(stored_messages(appliance, "postmaster@example.com")) == 1


def test_connection_limit_per_client_address(appliance_factory):
    appliance = appliance_factory(relay_networks=[], max_connections_per_ip=2)
    first, second = RawClient(appliance.ports["smtp"]), RawClient(appliance.ports["smtp"])
    assert first.reply()[0] == 220 and second.reply()[0] == 220
    third = RawClient(appliance.ports["smtp"])
    assert third.reply() == S_tuple(S.TOO_MANY_CONNECTIONS)
    first.close()
    gevent.sleep(0.2)
    fourth = RawClient(appliance.ports["smtp"])
    assert fourth.reply()[0] == 220
