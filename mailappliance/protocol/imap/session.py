"""The IMAP4rev1 session state machine (RFC 3501 §3, §6) with its extensions.

Bytes of one complete command (literals inline, from ``framing``) go in; untagged
and tagged responses plus at most one action (STARTTLS, IDLE, a SASL challenge,
close) come out. The session never touches a socket: the gevent glue in
``servers/imap.py`` carries out the actions. Mail storage is reached through the
backend object (``services/imap/backend.py`` and ``account.py``); folder-level work happens there,
while this module owns states, tags, capabilities, limits and response wording.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Iterable, Iterator, Optional, Protocol

from mailappliance.protocol import sasl
from mailappliance.protocol.envelope import Peer
from mailappliance.protocol.imap import encode
from mailappliance.protocol.imap.selected import SelectedFolder
from mailappliance.protocol.imap.types import Authenticate, Command, ParseError

log = logging.getLogger("mailappliance.imap")

MAX_BAD_COMMANDS = 20  # BADs in a row before the connection is closed
MAX_AUTH_FAILURES = 3  # failed LOGIN/AUTHENTICATE per connection before BYE
BASE_CAPABILITIES = ("IMAP4rev1", "LITERAL+", "SASL-IR", "ID", "ENABLE", "IDLE", "NAMESPACE")
SELECTED_CAPABILITIES = (
    "UIDPLUS", "MOVE", "UNSELECT", "SPECIAL-USE", "CHILDREN", "LIST-EXTENDED", "ESEARCH",
    "SORT", "THREAD=ORDEREDSUBJECT", "THREAD=REFERENCES", "CONDSTORE",
)
ENABLEABLE = ("CONDSTORE",)


class State(Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class StartTls:
    """Send the responses, then negotiate TLS (RFC 3501 §6.2.1)."""


@dataclass(frozen=True)
class Close:
    """Send the responses, then close the connection."""


@dataclass(frozen=True)
class Idle:
    """Enter IDLE (RFC 2177): report changes until the client sends DONE."""


@dataclass(frozen=True)
class ReadSasl:
    """Read one line: the client's answer to a SASL challenge (RFC 3501 §6.2.2)."""


Action = Any


@dataclass
class Outcome:
    responses: Iterable[bytes] = field(default_factory=list)
    action: Optional[Action] = None


@dataclass
class ImapConfig:
    hostname: str = "localhost"
    allow_plaintext_auth: bool = False
    starttls: bool = False  # STARTTLS possible on this connection
    max_message_size: int = 25 * 1024 * 1024
    max_bad_commands: int = MAX_BAD_COMMANDS


class Refused(Exception):
    """A backend refusal: answered ``NO [code] text``."""

    def __init__(self, text: str, code: Optional[str] = None) -> None:
        super().__init__(text)
        self.code = code


class BadArguments(Exception):
    """Arguments that parse but make no sense here (a message number beyond EXISTS):
    answered ``BAD`` (RFC 3501 §6.4.8)."""


class Backend(Protocol):
    """What the session needs from the mail store (implemented in services/imap/backend.py)."""

    def login(self, username: str, password: str, peer: Peer) -> Optional["Account"]: ...


class Account(Protocol):
    address: str

    def handle(self, session: "ImapSession", command: Command) -> Iterator[bytes]: ...

    def sync(self, view: SelectedFolder, expunge_allowed: bool) -> list[bytes]: ...

    def logout(self) -> None: ...


def ok(tag: str, text: str, code: Optional[str] = None) -> bytes:
    return _tagged(tag, "OK", text, code)


def no(tag: str, text: str, code: Optional[str] = None) -> bytes:
    return _tagged(tag, "NO", text, code)


def bad(tag: str, text: str, code: Optional[str] = None) -> bytes:
    return _tagged(tag, "BAD", text, code)


def _tagged(tag: str, status: str, text: str, code: Optional[str]) -> bytes:
    prefix = f"[{code}] " if code else ""
    return f"{tag} {status} {prefix}{text}\r\n".encode("utf-8", "replace")


# Commands by the states they are valid in (RFC 3501 §6.1-6.4 and extensions).
ANY = {State.NOT_AUTHENTICATED, State.AUTHENTICATED, State.SELECTED}
AUTHENTICATED = {State.AUTHENTICATED, State.SELECTED}
SELECTED = {State.SELECTED}
STATES = {
    "CAPABILITY": ANY, "NOOP": ANY, "LOGOUT": ANY, "ID": ANY,
    "STARTTLS": {State.NOT_AUTHENTICATED}, "LOGIN": {State.NOT_AUTHENTICATED},
    "AUTHENTICATE": {State.NOT_AUTHENTICATED},
    "SELECT": AUTHENTICATED, "EXAMINE": AUTHENTICATED, "CREATE": AUTHENTICATED, "DELETE": AUTHENTICATED,
    "RENAME": AUTHENTICATED, "SUBSCRIBE": AUTHENTICATED, "UNSUBSCRIBE": AUTHENTICATED, "LIST": AUTHENTICATED,
    "LSUB": AUTHENTICATED, "STATUS": AUTHENTICATED, "APPEND": AUTHENTICATED, "IDLE": AUTHENTICATED,
    "NAMESPACE": AUTHENTICATED, "ENABLE": AUTHENTICATED,
    "CHECK": SELECTED, "CLOSE": SELECTED, "UNSELECT": SELECTED, "EXPUNGE": SELECTED, "SEARCH": SELECTED,
    "FETCH": SELECTED, "STORE": SELECTED, "COPY": SELECTED, "MOVE": SELECTED, "SORT": SELECTED,
    "THREAD": SELECTED,
}
# RFC 3501 §7.4.1: no EXPUNGE responses while these run (their UID forms may have them).
NO_EXPUNGE_DURING = {"FETCH", "STORE", "SEARCH", "SORT", "THREAD"}


class ImapSession:
    def __init__(
        self,
        config: ImapConfig,
        backend: Backend,
        peer: Peer,
        tls: bool,
        parse: Callable[[bytes], Command],
    ) -> None:
        self.config = config
        self.backend = backend
        self.peer = peer
        self.tls = tls
        self.parse = parse
        self.state = State.NOT_AUTHENTICATED
        self.account: Optional[Account] = None
        self.selected: Optional[SelectedFolder] = None
        self.enabled: set[str] = set()
        self.bad_commands = 0
        self.auth_failures = 0
        self.client_id: Optional[dict] = None
        self._sasl: Optional[_SaslExchange] = None
        self._idle_tag: Optional[str] = None

    # ------------------------------------------------------------------ greeting and capabilities
    def greeting(self) -> bytes:
        return b"* OK [CAPABILITY %s] %s IMAP4rev1 ready\r\n" % (
            self.capabilities().encode(), self.config.hostname.encode("ascii", "replace"),
        )

    @property
    def plaintext_forbidden(self) -> bool:
        return not self.tls and not self.config.allow_plaintext_auth

    def capabilities(self) -> str:
        caps = list(BASE_CAPABILITIES)
        if self.state == State.NOT_AUTHENTICATED:
            if self.config.starttls and not self.tls:
                caps.append("STARTTLS")
            if self.plaintext_forbidden:
                caps.append("LOGINDISABLED")
            else:
                caps.append("AUTH=PLAIN")
                caps.append("AUTH=LOGIN")
        else:
            caps += SELECTED_CAPABILITIES
            caps.append(f"APPENDLIMIT={self.config.max_message_size}")  # RFC 7889
        return " ".join(caps)

    @property
    def watched_folder(self) -> Optional[object]:
        return self.selected.folder_id if self.selected is not None else None

    # ------------------------------------------------------------------ commands
    def receive(self, data: bytes) -> Outcome:
        """One complete command (its literals inline)."""
        try:
            command = self.parse(data)
        except ParseError as exc:
            return self._bad_syntax(exc.tag, str(exc))
        except (ValueError, UnicodeError) as exc:
            return self._bad_syntax(None, f"Syntax error: {exc}")
        return self.execute(command)

    def reject(self, tag: Optional[str], reason: str, too_big: bool = False) -> Outcome:
        """A command the framer refused: a literal over the limit is ``NO [TOOBIG]``
        (RFC 7889 §4, what APPEND of an oversized message gets); an overlong line is BAD."""
        if too_big and tag is not None:
            return Outcome([no(tag, f"{reason} (at most {self.config.max_message_size} octets)", "TOOBIG")])
        return self._bad_syntax(tag, reason)

    def _bad_syntax(self, tag: Optional[str], text: str) -> Outcome:
        self.bad_commands += 1
        line = bad(tag or "*", text)
        if self.bad_commands >= self.config.max_bad_commands:
            return Outcome([line, b"* BYE Too many invalid commands\r\n"], Close())
        return Outcome([line])

    def execute(self, command: Command) -> Outcome:
        tag, name = command.tag, command.name
        allowed = STATES.get(name)
        if allowed is None:
            return self._bad_syntax(tag, f"Unknown command {name}")
        if self.state not in allowed:
            self.bad_commands += 1
            return Outcome([bad(tag, f"{name} not allowed now ({self.state.value})")])
        self.bad_commands = 0
        handler = getattr(self, "cmd_" + name.lower(), None)
        try:
            if handler is not None:
                return handler(command)
            assert self.account is not None
            return Outcome(self._with_updates(command, self.account.handle(self, command)))
        except Refused as exc:
            return Outcome([no(tag, str(exc), exc.code)])

    def _with_updates(self, command: Command, responses: Iterator[bytes]) -> Iterator[bytes]:
        """Responses of a command, with pending changes reported before its tagged reply.

        Backend work happens while the responses are consumed, so refusals and
        failures are turned into the tagged NO here; the connection carries on.
        """
        tag = command.tag.encode() + b" "
        tagged = None
        try:
            for line in responses:
                if line.startswith(tag):
                    tagged = line
                    continue
                yield line
            if self.selected is not None and self.account is not None:
                uid_form = bool(getattr(command.args, "uid", False))
                allowed = uid_form or command.name not in NO_EXPUNGE_DURING
                yield from self.account.sync(self.selected, expunge_allowed=allowed)
        except BadArguments as exc:
            tagged = bad(command.tag, str(exc))
        except Refused as exc:
            if exc.code == "CLOSED":
                self.unselect()
                yield b"* OK [CLOSED] %s\r\n" % str(exc).encode()
            else:
                tagged = no(command.tag, str(exc), exc.code)
        except Exception:
            log.exception("imap %s failed for <%s>", command.name, getattr(self.account, "address", "?"))
            tagged = no(command.tag, "Internal error; try again later", "SERVERBUG")
        yield tagged if tagged is not None else ok(command.tag, f"{command.name} completed")

    # ------------------------------------------------------------------ any state
    def cmd_capability(self, command: Command) -> Outcome:
        return Outcome([b"* CAPABILITY %s\r\n" % self.capabilities().encode(), ok(command.tag, "CAPABILITY completed")])

    def cmd_noop(self, command: Command) -> Outcome:
        return Outcome(self._with_updates(command, iter([ok(command.tag, "NOOP completed")])))

    cmd_check = cmd_noop  # RFC 3501 §6.4.1: every write is already durable

    def cmd_logout(self, command: Command) -> Outcome:
        self._end()
        return Outcome([b"* BYE Logging out\r\n", ok(command.tag, "LOGOUT completed")], Close())

    def cmd_id(self, command: Command) -> Outcome:
        """RFC 2971: log what the client says it is; say what we are."""
        params = getattr(command.args, "params", None)
        if params:
            self.client_id = {k: v for k, v in params[:30]}
            log.info("client [%s] id %s", self.peer.ip, self.client_id)
        return Outcome([b'* ID ("name" "mailappliance")\r\n', ok(command.tag, "ID completed")])

    # ------------------------------------------------------------------ not authenticated
    def cmd_starttls(self, command: Command) -> Outcome:
        if self.tls or not self.config.starttls:
            return Outcome([bad(command.tag, "TLS is already active" if self.tls else "STARTTLS not available")])
        return Outcome([ok(command.tag, "Begin TLS negotiation now")], StartTls())

    def tls_started(self) -> None:
        self.tls = True

    def cmd_login(self, command: Command) -> Outcome:
        if self.plaintext_forbidden:
            return Outcome([no(command.tag, "Plaintext login is disabled; use STARTTLS first", "PRIVACYREQUIRED")])
        return self._login(command.tag, command.args.user, command.args.password)

    def cmd_authenticate(self, command: Command) -> Outcome:
        args: Authenticate = command.args
        mechanism = args.mechanism.upper()
        if mechanism not in sasl.MECHANISMS:
            return Outcome([no(command.tag, f"Unsupported mechanism {mechanism}", "CANNOT")])
        if self.plaintext_forbidden:
            return Outcome([no(command.tag, "Plaintext authentication is disabled; use STARTTLS first", "PRIVACYREQUIRED")])
        self._sasl = _SaslExchange(command.tag, mechanism)
        if args.initial is not None:
            return self.continue_sasl(args.initial.encode("ascii", "replace"))
        prompt = "" if mechanism == "PLAIN" else sasl.LOGIN_USERNAME_PROMPT
        return Outcome([b"+ %s\r\n" % prompt.encode()], ReadSasl())

    def continue_sasl(self, line: bytes) -> Outcome:
        """The client's answer to a challenge (RFC 3501 §6.2.2)."""
        exchange = self._sasl
        assert exchange is not None
        text = line.decode("ascii", "replace").strip()
        if text == sasl.CANCEL:
            self._sasl = None
            return Outcome([bad(exchange.tag, "Authentication cancelled")])
        if exchange.mechanism == "PLAIN":
            self._sasl = None
            creds = sasl.parse_plain(text)
            if isinstance(creds, str):
                return Outcome([bad(exchange.tag, "Malformed PLAIN response")])
            return self._login(exchange.tag, creds.username, creds.password)
        decoded = sasl.decode_text(text) if text != "=" else ""
        if decoded is None:
            self._sasl = None
            return Outcome([bad(exchange.tag, "Malformed base64 response")])
        if exchange.username is None:
            exchange.username = decoded
            return Outcome([b"+ %s\r\n" % sasl.LOGIN_PASSWORD_PROMPT.encode()], ReadSasl())
        self._sasl = None
        return self._login(exchange.tag, exchange.username, decoded)

    def _login(self, tag: str, username: str, password: str) -> Outcome:
        try:
            account = self.backend.login(username, password, self.peer)
        except Refused as exc:
            self.auth_failures += 1
            return Outcome([no(tag, str(exc), exc.code)])
        if account is None:
            self.auth_failures += 1
            responses = [no(tag, "Invalid credentials", "AUTHENTICATIONFAILED")]
            if self.auth_failures >= MAX_AUTH_FAILURES:
                return Outcome(responses + [b"* BYE Too many failed logins\r\n"], Close())
            return Outcome(responses)
        self.account = account
        self.state = State.AUTHENTICATED
        log.info("imap login: user=<%s> client=[%s]%s", account.address, self.peer.ip, " tls" if self.tls else "")
        return Outcome([ok(tag, "Logged in", f"CAPABILITY {self.capabilities()}")])

    # ------------------------------------------------------------------ authenticated
    def cmd_enable(self, command: Command) -> Outcome:
        """RFC 5161: only CONDSTORE is enableable here."""
        wanted = [c.upper() for c in command.args.capabilities if c.upper() in ENABLEABLE]
        newly = [c for c in wanted if c not in self.enabled]
        self.enabled.update(newly)
        if "CONDSTORE" in newly and self.selected is not None:
            self.selected.condstore = True
        line = b"* ENABLED" + b"".join(b" " + c.encode() for c in newly) + b"\r\n"
        return Outcome([line, ok(command.tag, "ENABLE completed")])

    def cmd_namespace(self, command: Command) -> Outcome:
        """RFC 2342: one personal namespace, delimiter "/"."""
        return Outcome([b'* NAMESPACE (("" "/")) NIL NIL\r\n', ok(command.tag, "NAMESPACE completed")])

    def cmd_idle(self, command: Command) -> Outcome:
        self._idle_tag = command.tag
        updates = self.idle_changes()
        return Outcome(updates + [b"+ idling\r\n"], Idle())

    def idle_changes(self) -> list[bytes]:
        """Changes to report while idling (RFC 2177 §3: EXPUNGE is fine here)."""
        if self.selected is None or self.account is None:
            return []
        try:
            return self.account.sync(self.selected, expunge_allowed=True)
        except Refused as exc:  # the folder was deleted under us
            self.unselect()
            return [b"* OK [CLOSED] %s\r\n" % str(exc).encode()]

    def idle_done(self, line: bytes) -> Outcome:
        tag = self._idle_tag or "*"
        self._idle_tag = None
        if line.strip().upper() != b"DONE":
            return self._bad_syntax(tag, "Expected DONE to end IDLE")
        return Outcome(self.idle_changes() + [ok(tag, "IDLE terminated")])

    def select(self, view: SelectedFolder) -> None:
        """Called by the backend when SELECT/EXAMINE succeeds."""
        view.condstore = view.condstore or "CONDSTORE" in self.enabled
        self.selected = view
        self.state = State.SELECTED

    def unselect(self) -> None:
        self.selected = None
        self.state = State.AUTHENTICATED

    def cmd_unselect(self, command: Command) -> Outcome:
        """RFC 3691: leave the folder without expunging."""
        self.unselect()
        return Outcome([ok(command.tag, "UNSELECT completed")])

    # ------------------------------------------------------------------ timeouts and shutdown
    def autologout(self) -> bytes:
        """RFC 3501 §5.4: an idle client is logged out after at least 30 minutes."""
        self._end()
        return b"* BYE Autologout; idle for too long\r\n"

    def shutting_down(self) -> bytes:
        return b"* BYE Server shutting down\r\n"

    def closed(self) -> None:
        """The connection is gone, however it ended."""
        self._end()

    def _end(self) -> None:
        if self.state != State.LOGOUT:
            self.state = State.LOGOUT
            if self.account is not None:
                self.account.logout()


@dataclass
class _SaslExchange:
    tag: str
    mechanism: str
    username: Optional[str] = None


def quote(value: str) -> bytes:
    return encode.string(value)
