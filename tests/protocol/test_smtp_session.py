"""The SMTP and LMTP session state machines, driven without sockets.

The backend here is a small in-memory implementation of the session's hook
interface (like aiosmtpd's handler objects), not a database stand-in: the storage
path is covered against the real database in tests/storage and tests/e2e.
"""
from datetime import datetime, timezone

import pytest

from mailappliance.protocol.lines import DataReader
from mailappliance.protocol.lmtp import LmtpSession
from mailappliance.protocol.replies import Reply, S
from mailappliance.protocol.smtp import (
    BackendUnavailable,
    Close,
    Peer,
    ReadData,
    Recipient,
    Role,
    SessionConfig,
    SmtpSession,
    StartTls,
    replies_only,
)

PLAIN_GOOD = "AHVzZXJAZXhhbXBsZS5jb20Ac2VjcmV0"  # \0user@example.com\0secret


class HookBackend:
    def __init__(self):
        self.local = {"user@example.com", "full@example.com", "other@example.com"}
        self.delivered = []
        self.fail_storage = False

    def authenticate(self, username, password):
        return "user@example.com" if (username, password) == ("user@example.com", "secret") else None

    def check_recipient(self, address, relay_allowed, size_hint):
        if address.domain == "example.com":
            if address.address.lower() not in self.local:
                return S.NO_SUCH_USER
            return Recipient(address.address, mailbox=address.address.lower())
        return Recipient(address.address) if relay_allowed else S.RELAY_DENIED

    def deliver(self, transaction, per_recipient):
        if self.fail_storage:
            raise BackendUnavailable()
        self.delivered.append(transaction)
        if per_recipient:
            return [
                S.MAILBOX_FULL if r.address.startswith("full@") else S.delivered(r.address, transaction.queue_id)
                for r in transaction.envelope.recipients
            ]
        return [S.queued(transaction.queue_id)]


def make(role=Role.MX, session_class=SmtpSession, tls_active=False, relay_client=False, **config):
    backend = HookBackend()
    cfg = SessionConfig(hostname="mx.example.com", role=role, max_size=10_000, tls_available=True, **config)
    session = session_class(
        cfg,
        backend,
        Peer("192.0.2.7", 40000, 25),
        tls_active=tls_active,
        relay_client=relay_client,
        clock=lambda: datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        new_queue_id=lambda: "Q1",
    )
    return session, backend


def say(session, line):
    return session.handle_line(line.encode())


def one(session, line) -> Reply:
    replies = replies_only(say(session, line))
    assert len(replies) == 1, replies
    return replies[0]


def send_data(session, body: bytes):
    reader = DataReader(session.config.max_size)
    assert reader.feed(body)
    return session.handle_data(reader.result)


def test_greeting_and_ehlo_keywords():
    session, _ = make()
    assert session.greeting().code == 220
    reply = one(session, "EHLO client.example")
    assert reply.code == 250
    keywords = reply.lines[1:]
    assert "PIPELINING" in keywords and "SIZE 10000" in keywords and "8BITMIME" in keywords
    assert "ENHANCEDSTATUSCODES" in keywords and "SMTPUTF8" in keywords and "STARTTLS" in keywords
    assert not any(k.startswith("AUTH") for k in keywords), "no AUTH before TLS"


def test_auth_advertised_under_tls_and_with_plaintext_allowed():
    session, _ = make(tls_active=True)
    assert "AUTH PLAIN LOGIN" in one(session, "EHLO c").lines
    assert "STARTTLS" not in one(session, "EHLO c").lines
    session, _ = make(allow_plaintext_auth=True)
    assert "AUTH PLAIN LOGIN" in one(session, "EHLO c").lines


def test_full_transaction_adds_received_header():
    session, backend = make()
    one(session, "EHLO client.example")
    assert one(session, "MAIL FROM:<a@remote.example> SIZE=100") == S.SENDER_OK
    assert one(session, "RCPT TO:<user@example.com>") == S.RECIPIENT_OK
    actions = say(session, "DATA")
    assert actions == [S.START_DATA, ReadData(10_000)]
    assert replies_only(send_data(session, b"Subject: hi\r\n\r\nbody\r\n.\r\n")) == [S.queued("Q1")]
    transaction = backend.delivered[0]
    assert transaction.message == b"Subject: hi\r\n\r\nbody\r\n"
    assert transaction.received_header.startswith(b"Received: from client.example ([192.0.2.7])")
    assert b"with ESMTP id Q1" in transaction.received_header
    assert b"for <user@example.com>" in transaction.received_header
    assert not session.in_transaction


def test_sequence_errors():
    session, _ = make()
    assert one(session, "MAIL FROM:<a@b.example>") == S.BAD_SEQUENCE_HELO
    one(session, "HELO c")
    assert one(session, "RCPT TO:<user@example.com>") == S.BAD_SEQUENCE_MAIL
    assert one(session, "DATA") == S.BAD_SEQUENCE_MAIL
    one(session, "MAIL FROM:<a@b.example>")
    assert one(session, "MAIL FROM:<a@b.example>") == S.BAD_SEQUENCE_NESTED_MAIL
    assert one(session, "DATA") == S.NO_VALID_RECIPIENTS
    assert one(session, "RSET") == S.OK
    assert one(session, "RCPT TO:<user@example.com>") == S.BAD_SEQUENCE_MAIL


def test_unknown_and_syntax_errors():
    session, _ = make()
    assert one(session, "BOGUS") == S.UNRECOGNIZED
    assert one(session, "HELO") == S.SYNTAX_HELO
    one(session, "EHLO c")
    assert one(session, "MAIL TO:<a@b.example>") == S.SYNTAX_MAIL
    assert one(session, "MAIL FROM:<a@b@c.example>") == S.BAD_SENDER_SYNTAX
    assert one(session, "MAIL FROM:<a@b.example> FOO=1") == S.BAD_PARAMETER
    assert one(session, "MAIL FROM:<a@b.example> SIZE=999999") == S.MESSAGE_TOO_BIG
    assert session.handle_line(b"NOOP \xff") == [S.BAD_ENCODING]


def test_relay_refused_for_strangers_allowed_for_relay_networks():
    session, _ = make()
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    assert one(session, "RCPT TO:<someone@elsewhere.example>") == S.RELAY_DENIED
    assert one(session, "RCPT TO:<@example.com:someone@elsewhere.example>") == S.RELAY_DENIED
    assert one(session, "RCPT TO:<nobody@example.com>") == S.NO_SUCH_USER
    assert one(session, 'RCPT TO:<"someone@elsewhere.example"@example.com>') == S.NO_SUCH_USER
    relay, _ = make(relay_client=True)
    one(relay, "EHLO c")
    one(relay, "MAIL FROM:<a@b.example>")
    assert one(relay, "RCPT TO:<someone@elsewhere.example>") == S.RECIPIENT_OK


def test_recipient_limit():
    session, _ = make(max_recipients=2)
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    assert one(session, "RCPT TO:<user@example.com>") == S.RECIPIENT_OK
    assert one(session, "RCPT TO:<other@example.com>") == S.RECIPIENT_OK
    assert one(session, "RCPT TO:<full@example.com>") == S.TOO_MANY_RECIPIENTS


def test_smtputf8_required_for_utf8_addresses():
    session, _ = make(relay_client=True)
    one(session, "EHLO c")
    assert one(session, "MAIL FROM:<jörg@bücher.example>") == S.NEED_SMTPUTF8
    assert one(session, "MAIL FROM:<jörg@bücher.example> SMTPUTF8") == S.SENDER_OK
    assert one(session, "RCPT TO:<ünï@elsewhere.example>") == S.RECIPIENT_OK


def test_bad_command_budget_closes_with_421():
    session, _ = make(max_bad_commands=3)
    say(session, "X1")
    say(session, "X2")
    actions = say(session, "X3")
    assert actions[-2:] == [S.TOO_MANY_ERRORS, Close()]


def test_submission_requires_tls_then_auth():
    session, _ = make(role=Role.SUBMISSION)
    one(session, "EHLO c")
    assert one(session, "MAIL FROM:<user@example.com>") == S.MUST_STARTTLS
    assert one(session, "AUTH PLAIN " + PLAIN_GOOD) == S.ENCRYPTION_REQUIRED
    assert say(session, "STARTTLS") == [S.READY_FOR_TLS, StartTls()]
    session.tls_started()
    assert one(session, "MAIL FROM:<user@example.com>") == S.BAD_SEQUENCE_HELO, "EHLO again after TLS"
    one(session, "EHLO c")
    assert one(session, "MAIL FROM:<user@example.com>") == S.AUTH_REQUIRED
    assert one(session, "AUTH PLAIN " + PLAIN_GOOD) == S.AUTH_OK
    assert one(session, "AUTH PLAIN " + PLAIN_GOOD) == S.AUTH_ALREADY
    assert one(session, "MAIL FROM:<someone.else@example.com>") == S.SENDER_NOT_OWNED
    assert one(session, "MAIL FROM:<USER@example.com>") == S.SENDER_OK
    assert one(session, "RCPT TO:<anyone@elsewhere.example>") == S.RECIPIENT_OK, "authenticated may relay"
    assert session.protocol_name == "ESMTPSA"


def test_auth_login_two_steps_and_cancel():
    session, _ = make(tls_active=True)
    one(session, "EHLO c")
    assert one(session, "AUTH LOGIN") == Reply.of(334, "VXNlcm5hbWU6")
    assert session.line_limit > 512
    assert one(session, "dXNlckBleGFtcGxlLmNvbQ==") == Reply.of(334, "UGFzc3dvcmQ6")
    assert one(session, "d3Jvbmc=") == S.AUTH_FAILED
    assert session.auth_failures == 1
    assert one(session, "AUTH PLAIN") == Reply.of(334, "")
    assert one(session, "*") == S.AUTH_CANCELLED
    assert one(session, "AUTH PLAIN not-base64!") == S.AUTH_BAD_BASE64
    assert one(session, "AUTH CRAM-MD5") == S.AUTH_UNKNOWN_MECHANISM
    assert one(session, "AUTH LOGIN dXNlckBleGFtcGxlLmNvbQ==") == Reply.of(334, "UGFzc3dvcmQ6")
    assert one(session, "c2VjcmV0") == S.AUTH_OK


def test_starttls_refused_when_active_or_in_transaction():
    session, _ = make()
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    assert one(session, "STARTTLS").code == 503
    session, _ = make(tls_active=True)
    one(session, "EHLO c")
    assert one(session, "STARTTLS") == S.TLS_ACTIVE


def test_data_errors_reset_the_transaction():
    session, backend = make()
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<user@example.com>")
    say(session, "DATA")
    assert replies_only(send_data(session, b"a\nb\r\n.\r\n")) == [S.BARE_LINE_ENDING]
    assert backend.delivered == []
    assert one(session, "RCPT TO:<user@example.com>") == S.BAD_SEQUENCE_MAIL


def test_storage_failure_is_a_temporary_error():
    session, backend = make()
    backend.fail_storage = True
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<user@example.com>")
    say(session, "DATA")
    assert replies_only(send_data(session, b"x\r\n.\r\n")) == [S.STORAGE_FAILED]


def test_misc_verbs():
    session, _ = make()
    assert one(session, "NOOP") == S.OK
    assert one(session, "HELP").code == 214
    assert one(session, "VRFY user") == S.VRFY
    assert say(session, "QUIT") == [S.BYE, Close()]


# ----------------------------------------------------------------------------- LMTP
def test_lmtp_uses_lhlo_and_replies_per_recipient():
    session, backend = make(role=Role.LMTP, session_class=LmtpSession)
    assert "LMTP" in session.greeting().text
    assert one(session, "EHLO c") == S.USE_LHLO
    reply = one(session, "LHLO c")
    assert reply.code == 250 and not any(k.startswith("AUTH") for k in reply.lines)
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<user@example.com>")
    assert one(session, "RCPT TO:<nobody@example.com>") == S.NO_SUCH_USER
    one(session, "RCPT TO:<full@example.com>")
    assert one(session, "RCPT TO:<x@elsewhere.example>") == S.RELAY_DENIED, "LMTP never relays"
    say(session, "DATA")
    replies = replies_only(send_data(session, b"Subject: x\r\n\r\nhi\r\n.\r\n"))
    assert replies == [S.delivered("user@example.com", "Q1"), S.MAILBOX_FULL]
    assert b"with LMTP" in backend.delivered[0].received_header


def test_lmtp_data_error_answers_every_recipient():
    session, _ = make(role=Role.LMTP, session_class=LmtpSession)
    one(session, "LHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<user@example.com>")
    one(session, "RCPT TO:<other@example.com>")
    say(session, "DATA")
    assert replies_only(send_data(session, b"a\rb\r\n.\r\n")) == [S.BARE_LINE_ENDING] * 2


@pytest.mark.parametrize("line", ["AUTH PLAIN " + PLAIN_GOOD, "HELO c"])
def test_lmtp_rejects_smtp_only_verbs(line):
    session, _ = make(role=Role.LMTP, session_class=LmtpSession)
    one(session, "LHLO c")
    assert one(session, line).code >= 500


def test_session_stays_busy_while_the_backend_stores():
    """A shutdown must not see an idle session while its message is being written."""
    session, backend = make()
    seen = []
    original = backend.deliver

    def deliver(transaction, per_recipient):
        seen.append(session.in_transaction)
        return original(transaction, per_recipient)

    backend.deliver = deliver
    one(session, "EHLO c")
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<user@example.com>")
    say(session, "DATA")
    send_data(session, b"x\r\n.\r\n")
    assert seen == [True]
    assert not session.in_transaction


def test_refusals_are_logged_like_postfix(caplog):
    caplog.set_level("INFO", logger="mailappliance.smtp")
    session, _ = make()
    one(session, "EHLO c.example")
    one(session, "MAIL FROM:<a@b.example>")
    one(session, "RCPT TO:<victim@elsewhere.example>")
    [record] = caplog.records
    assert record.getMessage() == (
        "NOQUEUE: reject: RCPT from [192.0.2.7]:40000 port=25: 554 5.7.1 Relay access denied; "
        "from=<a@b.example> to=<victim@elsewhere.example> proto=ESMTP helo=<c.example>"
    )


def test_garbled_auth_response_ends_the_exchange():
    session, _ = make(tls_active=True)
    one(session, "EHLO c")
    one(session, "AUTH LOGIN")
    assert session.handle_line(b"\xff\xfe") == [S.BAD_ENCODING]
    assert one(session, "NOOP") == S.OK, "the next line is a command again, not a credential"


def test_authenticated_user_may_use_the_null_sender():
    session, _ = make(tls_active=True)
    one(session, "EHLO c")
    one(session, "AUTH PLAIN " + PLAIN_GOOD)
    assert one(session, "MAIL FROM:<>") == S.SENDER_OK


def test_postmaster_without_domain_is_accepted_syntax():
    from mailappliance.protocol.addresses import Address, parse_path

    assert parse_path("TO:<Postmaster>", "TO", allow_null=False) == (Address("postmaster", ""), {})


def test_failed_authentication_is_logged_for_fail2ban(caplog):
    caplog.set_level("INFO", logger="mailappliance.smtp")
    session, _ = make(tls_active=True)
    one(session, "EHLO c")
    one(session, "AUTH PLAIN AHVzZXJAZXhhbXBsZS5jb20Ad3Jvbmc=")  # wrong password
    assert "authentication failed: user=<user@example.com> client=[192.0.2.7]:40000 port=25" in caplog.text


def test_control_characters_in_a_command_are_refused_not_echoed():
    session, _ = make()
    replies = session.handle_line(b"EHLO evil\r\x00")
    assert replies == [S.CONTROL_CHARACTERS]
    assert session.helo == ""
    assert session.handle_line(b"EHLO good.example")[0].code == 250
