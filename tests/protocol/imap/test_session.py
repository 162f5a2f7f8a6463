"""The IMAP session state machine without sockets or storage: states, capabilities,
LOGINDISABLED, STARTTLS, AUTHENTICATE exchanges and the bad-command budget."""
import base64

from mailappliance.protocol.envelope import Peer
from mailappliance.protocol.imap.session import (
    Close, ImapConfig, ImapSession, ReadSasl, Refused, StartTls, State,
)
from mailappliance.protocol.imap.types import Authenticate, Command, Login, ParseError

PEER = Peer(ip="192.0.2.1", port=40000, local_port=143)


class Account:
    address = "user@example.com"

    def __init__(self):
        self.logged_out = False

    def handle(self, session, command):
        yield f"{command.tag} OK done\r\n".encode()

    def sync(self, view, expunge_allowed):
        return []

    def logout(self):
        self.logged_out = True


class Backend:
    """Accepts one password; a refusal for one locked-out user."""

    def __init__(self):
        self.account = Account()

    def login(self, username, password, peer):
        if username == "locked@example.com":
            raise Refused("Login temporarily refused", "UNAVAILABLE")
        return self.account if password == "secret" else None


def parse_error(data: bytes) -> Command:
    raise ParseError("Syntax error", tag=data.split(b" ")[0].decode())


def session(tls=False, plaintext=False, **config) -> ImapSession:
    return ImapSession(ImapConfig(allow_plaintext_auth=plaintext, starttls=True, **config), Backend(), PEER, tls, parse_error)


def text(outcome) -> list[bytes]:
    return list(outcome.responses)


def test_greeting_and_capabilities_before_tls():
    s = session()
    greeting = s.greeting()
    assert greeting.startswith(b"* OK [CAPABILITY IMAP4rev1 ")
    assert b"STARTTLS" in greeting and b"LOGINDISABLED" in greeting and b"AUTH=PLAIN" not in greeting


def test_login_refused_without_tls_then_allowed_after_starttls():
    s = session()
    assert text(s.execute(Command("a", "LOGIN", Login("user@example.com", "secret")))) == [
        b"a NO [PRIVACYREQUIRED] Plaintext login is disabled; use STARTTLS first\r\n"
    ]
    outcome = s.execute(Command("b", "STARTTLS"))
    assert isinstance(outcome.action, StartTls)
    s.tls_started()
    assert b"STARTTLS" not in s.capabilities().encode() and "AUTH=PLAIN" in s.capabilities()
    out = text(s.execute(Command("c", "LOGIN", Login("user@example.com", "secret"))))
    assert out[0].startswith(b"c OK [CAPABILITY IMAP4rev1") and s.state is State.AUTHENTICATED
    assert "UIDPLUS" in s.capabilities() and "APPENDLIMIT=" in s.capabilities()


def test_commands_are_checked_against_the_state():
    s = session(plaintext=True)
    assert text(s.execute(Command("a", "SELECT"))) == [b"a BAD SELECT not allowed now (not authenticated)\r\n"]
    assert text(s.execute(Command("b", "FETCH"))) [0].startswith(b"b BAD")
    s.execute(Command("c", "LOGIN", Login("user@example.com", "secret")))
    assert text(s.execute(Command("d", "FETCH")))[0] == b"d BAD FETCH not allowed now (authenticated)\r\n"
    assert text(s.execute(Command("e", "LOGIN", Login("x", "y"))))[0].startswith(b"e BAD")


def test_wrong_passwords_then_bye():
    s = session(plaintext=True)
    for tag in ("a", "b"):
        out = s.execute(Command(tag, "LOGIN", Login("user@example.com", "wrong")))
        assert text(out) == [f"{tag} NO [AUTHENTICATIONFAILED] Invalid credentials\r\n".encode()]
        assert out.action is None
    out = s.execute(Command("c", "LOGIN", Login("user@example.com", "wrong")))
    assert isinstance(out.action, Close) and text(out)[-1].startswith(b"* BYE")


def test_locked_out_login_is_no_unavailable():
    s = session(plaintext=True)
    out = text(s.execute(Command("a", "LOGIN", Login("locked@example.com", "secret"))))
    assert out == [b"a NO [UNAVAILABLE] Login temporarily refused\r\n"]


def test_authenticate_plain_with_and_without_initial_response():
    token = base64.b64encode(b"\0user@example.com\0secret").decode()
    s = session(tls=True)
    out = text(s.execute(Command("a", "AUTHENTICATE", Authenticate("PLAIN", token))))
    assert out[0].startswith(b"a OK") and s.state is State.AUTHENTICATED
    s = session(tls=True)
    outcome = s.execute(Command("a", "AUTHENTICATE", Authenticate("PLAIN")))
    assert text(outcome) == [b"+ \r\n"] and isinstance(outcome.action, ReadSasl)
    assert text(s.continue_sasl(token.encode()))[0].startswith(b"a OK")


def test_authenticate_login_two_steps_and_cancel():
    s = session(tls=True)
    outcome = s.execute(Command("a", "AUTHENTICATE", Authenticate("LOGIN")))
    assert text(outcome) == [b"+ VXNlcm5hbWU6\r\n"]
    assert text(s.continue_sasl(base64.b64encode(b"user@example.com"))) == [b"+ UGFzc3dvcmQ6\r\n"]
    assert text(s.continue_sasl(base64.b64encode(b"secret")))[0].startswith(b"a OK")
    s = session(tls=True)
    s.execute(Command("b", "AUTHENTICATE", Authenticate("PLAIN")))
    assert text(s.continue_sasl(b"*")) == [b"b BAD Authentication cancelled\r\n"]
    assert text(s.execute(Command("c", "AUTHENTICATE", Authenticate("CRAM-MD5"))))[0].startswith(b"c NO [CANNOT]")


def test_bad_command_budget_ends_in_bye():
    s = session(max_bad_commands=3)
    assert text(s.receive(b"a FROB"))[0] == b"a BAD Syntax error\r\n"
    s.receive(b"b FROB")
    outcome = s.receive(b"c FROB")
    assert isinstance(outcome.action, Close) and text(outcome)[-1] == b"* BYE Too many invalid commands\r\n"


def test_logout_and_id_and_namespace():
    s = session(plaintext=True)
    assert text(s.execute(Command("a", "ID")))[0] == b'* ID ("name" "mailappliance")\r\n'
    s.execute(Command("b", "LOGIN", Login("user@example.com", "secret")))
    assert text(s.execute(Command("c", "NAMESPACE")))[0] == b'* NAMESPACE (("" "/")) NIL NIL\r\n'
    outcome = s.execute(Command("d", "LOGOUT"))
    assert text(outcome) == [b"* BYE Logging out\r\n", b"d OK LOGOUT completed\r\n"]
    assert isinstance(outcome.action, Close) and s.backend.account.logged_out


def test_backend_failures_become_tagged_no_and_session_goes_on():
    s = session(plaintext=True)
    s.execute(Command("a", "LOGIN", Login("user@example.com", "secret")))

    def broken(session, command):
        yield b"* 1 EXISTS\r\n"
        raise RuntimeError("database went away")

    s.account.handle = broken
    assert text(s.execute(Command("b", "STATUS"))) == [b"* 1 EXISTS\r\n", b"b NO [SERVERBUG] Internal error; try again later\r\n"]

    def refused(session, command):
        raise Refused("No folder X", "NONEXISTENT")
        yield b""

    s.account.handle = refused
    assert text(s.execute(Command("c", "STATUS"))) == [b"c NO [NONEXISTENT] No folder X\r\n"]


def test_account_is_logged_out_once_however_the_session_ends():
    s = session(plaintext=True)
    s.execute(Command("a", "LOGIN", Login("user@example.com", "secret")))
    calls = []
    s.account.logout = lambda: calls.append(1)
    s.autologout()
    s.closed()
    assert calls == [1]
