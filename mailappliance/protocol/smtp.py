"""The SMTP server session as a pure state machine (RFC 5321, 3207, 4954, 1870, 2920, 6531).

A session is fed decoded command lines and DATA bodies and answers with *actions*:
:class:`Reply` objects to send, :class:`StartTls`, :class:`ReadData` and :class:`Close`.
It never touches a socket; what it needs from the rest of the appliance (checking a
password, judging a recipient, storing a message) it asks of a :class:`SmtpBackend`.
The gevent glue in ``servers/`` turns actions into socket I/O.
"""
from __future__ import annotations

import enum
import logging
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Optional, Protocol, Sequence, Union

from mailappliance.protocol import sasl
from mailappliance.protocol.addresses import Address, AddressError, parse_path
from mailappliance.protocol.envelope import Envelope, Peer, Recipient, Transaction
from mailappliance.protocol.lines import DataError, DataResult
from mailappliance.protocol.received import received_header
from mailappliance.protocol.replies import Reply, S
from mailappliance.settings import AUTH_LINE_LIMIT, COMMAND_LINE_LIMIT


log = logging.getLogger("mailappliance.smtp")
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # C0 controls except TAB, and DEL


# ----------------------------------------------------------------------------- actions
@dataclass(frozen=True)
class StartTls:
    """Flush replies, then negotiate TLS as the server (RFC 3207 §4)."""


@dataclass(frozen=True)
class ReadData:
    """Flush replies, then read a DATA body of at most ``max_size`` octets."""

    max_size: int


@dataclass(frozen=True)
class Close:
    """Flush replies and close the connection."""


Action = Union[Reply, StartTls, ReadData, Close]


# ----------------------------------------------------------------------------- roles
class Role(enum.Enum):
    """What a listening port is for (the seed's ports 25, 587 and 465)."""

    MX = "mx"  # port 25: inbound for local domains; relay only for RELAY_NETWORKS/auth
    SUBMISSION = "submission"  # port 587: STARTTLS, then AUTH for any mail (RFC 6409)
    SUBMISSIONS = "submissions"  # port 465: implicit TLS, then AUTH (RFC 8314)
    LMTP = "lmtp"  # ports 24/1024: local delivery (RFC 2033)


@dataclass
class SessionConfig:
    hostname: str
    role: Role
    max_size: int
    max_recipients: int = 100
    max_bad_commands: int = 20
    tls_available: bool = False
    allow_plaintext_auth: bool = False


class SmtpBackend(Protocol):
    """What a session needs from the rest of the appliance (compare aiosmtpd's handler hooks)."""

    def authenticate(self, username: str, password: str) -> Optional[str]:
        """The canonical account address when the password is right, else None.

        Raises :class:`BackendUnavailable` when the check could not be made.
        """

    def check_recipient(self, address: Address, relay_allowed: bool, size_hint: int) -> Union[Recipient, Reply]:
        """Accept a recipient (local or relayed) or give the reply refusing it."""

    def deliver(self, transaction: Transaction, per_recipient: bool) -> list[Reply]:
        """Store durably, then answer: one reply per recipient entry when ``per_recipient``
        (LMTP), else exactly one reply for the whole transaction, stored all or nothing."""


class BackendUnavailable(Exception):
    """The database could not answer; the client gets a 4xx and may try again."""


class _State(enum.Enum):
    START = "start"  # connected, no HELO/EHLO yet
    READY = "ready"  # greeted, no transaction
    MAIL = "mail"  # MAIL accepted
    RCPT = "rcpt"  # at least one RCPT accepted
    DATA = "data"  # reading the body


class _AuthStep(enum.Enum):
    PLAIN = "plain"
    LOGIN_USER = "login-user"
    LOGIN_PASSWORD = "login-password"


_MAIL_PARAMS = {"SIZE", "BODY", "SMTPUTF8", "AUTH"}
# RFC 5321 §6.3: a message that went through this many hops is looping (Postfix hopcount_limit).
MAX_RECEIVED_HEADERS = 50
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)


def received_count(message: bytes) -> int:
    """``Received:`` header fields in the header section (the body is not read)."""
    end = message.find(b"\r\n\r\n")
    return len(_RECEIVED.findall(message, 0, len(message) if end < 0 else end + 2))


class SmtpSession:
    """One SMTP conversation (RFC 5321 §4.1). Subclassed by :class:`LmtpSession`."""

    service = "ESMTP"
    protocol_base = "ESMTP"

    def __init__(
        self,
        config: SessionConfig,
        backend: SmtpBackend,
        peer: Peer,
        *,
        tls_active: bool = False,
        relay_client: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
        new_queue_id: Callable[[], str],
    ) -> None:
        self.config = config
        self.backend = backend
        self.peer = peer
        self.tls_active = tls_active
        self.relay_client = relay_client
        self.clock = clock
        self.new_queue_id = new_queue_id
        self.state = _State.START
        self.helo = ""
        self.esmtp = False
        self.authenticated_as: Optional[str] = None
        self.envelope = Envelope()
        self.bad_commands = 0
        self._auth_step: Optional[_AuthStep] = None
        self._auth_username = ""
        self.auth_failures = 0
        self._verbs: dict[str, Callable[[str], list[Action]]] = {
            "HELO": self.smtp_HELO,
            "EHLO": self.smtp_EHLO,
            "MAIL": self.smtp_MAIL,
            "RCPT": self.smtp_RCPT,
            "DATA": self.smtp_DATA,
            "RSET": self.smtp_RSET,
            "NOOP": self.smtp_NOOP,
            "QUIT": self.smtp_QUIT,
            "HELP": self.smtp_HELP,
            "VRFY": self.smtp_VRFY,
            "STARTTLS": self.smtp_STARTTLS,
            "AUTH": self.smtp_AUTH,
        }

    # ------------------------------------------------------------------ introspection
    @property
    def in_transaction(self) -> bool:
        """True between MAIL and the end of DATA: a shutdown waits for these."""
        return self.state in (_State.MAIL, _State.RCPT, _State.DATA) or self._auth_step is not None

    @property
    def line_limit(self) -> int:
        return AUTH_LINE_LIMIT if self._auth_step is not None else COMMAND_LINE_LIMIT

    @property
    def requires_auth(self) -> bool:
        return self.config.role in (Role.SUBMISSION, Role.SUBMISSIONS)

    @property
    def auth_offered(self) -> bool:
        if self.config.role is Role.LMTP:
            return False
        return self.tls_active or self.config.allow_plaintext_auth

    # ------------------------------------------------------------------ entry points
    def greeting(self) -> Reply:
        return S.greeting(self.config.hostname, self.service)

    def handle_line(self, line: bytes) -> list[Action]:
        """Answer one command line (without its CRLF)."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError:
            self._auth_step = None  # a garbled AUTH response ends the exchange
            return self._error(S.BAD_ENCODING)
        if _CONTROL.search(text):
            # RFC 5321 §4.1.1: commands are printable text. A NUL or bare CR would
            # otherwise be echoed in replies and written to logs and the database.
            self._auth_step = None
            return self._error(S.CONTROL_CHARACTERS)
        if self._auth_step is not None:
            return self._count(self._auth_continue(text))
        verb, _, argument = text.partition(" ")
        handler = self._verbs.get(verb.upper())
        if handler is None:
            return self._count([S.UNRECOGNIZED])
        return self._count(handler(argument.strip(" ")))

    def line_too_long(self) -> list[Action]:
        if self._auth_step is not None:
            self._auth_step = None
        return self._error(S.LINE_TOO_LONG)

    def handle_data(self, result: DataResult) -> list[Action]:
        """Finish DATA: refuse a bad body, else hand the transaction to the backend.

        The session stays in its transaction until the backend has answered, so a
        graceful shutdown waits for the write instead of cutting it off.
        """
        try:
            return self._finish_data(self.envelope, result)
        finally:
            self._reset_transaction()

    def _finish_data(self, envelope: Envelope, result: DataResult) -> list[Action]:
        if result.error is not None:
            reply = {
                DataError.TOO_BIG: S.MESSAGE_TOO_BIG,
                DataError.BARE_LINE_ENDING: S.BARE_LINE_ENDING,
                DataError.LINE_TOO_LONG: S.DATA_LINE_TOO_LONG,
            }[result.error]
            self._log_reject("DATA", reply, ",".join(r.address for r in envelope.recipients), envelope)
            if result.error == DataError.BARE_LINE_ENDING:
                # Whatever follows cannot be trusted to be framed as the client meant
                # (SMTP smuggling): answer and disconnect, like Postfix.
                return self._per_recipient(envelope, reply) + [Close()]
            return self._per_recipient(envelope, reply)
        assert result.message is not None
        if received_count(result.message) > MAX_RECEIVED_HEADERS:
            self._log_reject("DATA", S.TOO_MANY_HOPS, ",".join(r.address for r in envelope.recipients), envelope)
            return self._per_recipient(envelope, S.TOO_MANY_HOPS)
        queue_id = self.new_queue_id()
        now = self.clock()
        protocol = self.protocol_name
        header = received_header(
            helo=envelope.helo,
            peer_ip=self.peer.ip,
            peer_name=self.peer.reverse_name,
            hostname=self.config.hostname,
            protocol=protocol,
            queue_id=queue_id,
            recipient=envelope.recipients[0].address if len(envelope.recipients) == 1 else None,
            when=now,
        )
        transaction = Transaction(
            envelope=envelope,
            received_header=header,
            message=result.message,
            peer=self.peer,
            protocol=protocol,
            queue_id=queue_id,
            authenticated_as=self.authenticated_as,
            tls=self.tls_active,
            received_at=now,
            role=self.config.role.value,
        )
        try:
            replies = self.backend.deliver(transaction, per_recipient=self.per_recipient_replies)
        except BackendUnavailable:
            return self._per_recipient(envelope, S.STORAGE_FAILED)
        return list(replies)

    def tls_started(self) -> None:
        """RFC 3207 §4.2: after TLS the session starts over, forgetting HELO and AUTH."""
        self.tls_active = True
        self.state = _State.START
        self.helo = ""
        self.esmtp = False
        self.authenticated_as = None
        self._reset_transaction()

    # ------------------------------------------------------------------ helpers
    per_recipient_replies = False

    @property
    def protocol_name(self) -> str:
        """RFC 3848 §2 "with" keyword."""
        if not self.esmtp:
            return "SMTP" if self.protocol_base == "ESMTP" else self.protocol_base
        name = self.protocol_base
        if self.tls_active:
            name += "S"
        if self.authenticated_as:
            name += "A"
        return name

    def _per_recipient(self, envelope: Envelope, reply: Reply) -> list[Action]:
        return [reply]

    def _log_reject(self, stage: str, reply: Reply, to: str, envelope: Optional[Envelope] = None) -> None:
        """A Postfix-style ``NOQUEUE: reject`` line for a refused recipient or message."""
        envelope = envelope or self.envelope
        log.info(
            "NOQUEUE: reject: %s from [%s]:%d port=%d: %s; from=<%s> to=<%s> proto=%s helo=<%s>",
            stage, self.peer.ip, self.peer.port, self.peer.local_port, reply,
            envelope.mail_from, to, self.protocol_name, self.helo,
        )

    def _error(self, reply: Reply) -> list[Action]:
        return self._count([reply])

    def _count(self, actions: list[Action]) -> list[Action]:
        """Count 5xx answers; past the budget, say 421 and close (like smtpd_hard_error_limit)."""
        if any(isinstance(a, Reply) and a.code >= 500 for a in actions):
            self.bad_commands += 1
            if self.bad_commands >= self.config.max_bad_commands:
                return actions + [S.TOO_MANY_ERRORS, Close()]
        return actions

    def _reset_transaction(self) -> None:
        self.envelope = Envelope(helo=self.helo)
        if self.state is not _State.START:
            self.state = _State.READY

    # ------------------------------------------------------------------ verbs
    def smtp_HELO(self, argument: str) -> list[Action]:
        return self._greet(argument, esmtp=False)

    def smtp_EHLO(self, argument: str) -> list[Action]:
        return self._greet(argument, esmtp=True)

    def _greet(self, argument: str, esmtp: bool) -> list[Action]:
        """RFC 5321 §4.1.1.1: HELO/EHLO (re)start the session and clear any transaction."""
        if not argument or " " in argument:
            return [S.SYNTAX_HELO]
        self.helo = argument
        self.esmtp = esmtp
        self.state = _State.READY
        self._reset_transaction()
        if not esmtp:
            return [Reply.of(250, self.config.hostname)]
        return [Reply(250, tuple(self.ehlo_lines()))]

    def ehlo_lines(self) -> list[str]:
        lines = [
            f"{self.config.hostname} greets {self.helo}",
            "PIPELINING",
            f"SIZE {self.config.max_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
            "SMTPUTF8",
        ]
        if self.config.tls_available and not self.tls_active:
            lines.append("STARTTLS")
        if self.auth_offered:
            lines.append("AUTH " + " ".join(sasl.MECHANISMS))
        lines.append("HELP")
        return lines

    def smtp_MAIL(self, argument: str) -> list[Action]:
        actions = self._mail(argument)
        if actions and isinstance(actions[0], Reply) and actions[0].code >= 500:
            self._log_reject("MAIL", actions[0], "", Envelope(mail_from=argument[5:].strip()[:200]))
        return actions

    def _mail(self, argument: str) -> list[Action]:
        if self.state is _State.START:
            return [S.BAD_SEQUENCE_HELO]
        if self.state is not _State.READY:
            return [S.BAD_SEQUENCE_NESTED_MAIL]
        if self.requires_auth and self.authenticated_as is None:
            if not self.tls_active and not self.config.allow_plaintext_auth:
                return [S.MUST_STARTTLS]
            return [S.AUTH_REQUIRED]
        try:
            address, params = parse_path(argument, "FROM", allow_null=True)
        except AddressError:
            return [S.SYNTAX_MAIL] if not argument.upper().startswith("FROM:") else [S.BAD_SENDER_SYNTAX]
        if set(params) - _MAIL_PARAMS or not self.esmtp and params:
            return [S.BAD_PARAMETER]
        size_hint = 0
        if "SIZE" in params:
            try:
                size_hint = int(params["SIZE"] or "")
            except ValueError:
                return [S.BAD_PARAMETER]
            if size_hint > self.config.max_size:
                return [S.MESSAGE_TOO_BIG]
        if "BODY" in params and (params["BODY"] or "").upper() not in ("7BIT", "8BITMIME"):
            return [S.BAD_PARAMETER]
        smtputf8 = "SMTPUTF8" in params
        if address is not None and not address.is_ascii and not smtputf8:
            return [S.NEED_SMTPUTF8]
        sender = "" if address is None else address.address
        # An authenticated user sends as itself, or with the null sender that
        # auto-replies and read receipts use (RFC 3834 §3.3, RFC 8098 §2.1).
        if self.authenticated_as is not None and sender and sender.lower() != self.authenticated_as.lower():
            return [S.SENDER_NOT_OWNED]
        self.envelope = Envelope(
            helo=self.helo, mail_from=sender, mail_params=params, smtputf8=smtputf8, size_hint=size_hint
        )
        self.state = _State.MAIL
        return [S.SENDER_OK]

    def smtp_RCPT(self, argument: str) -> list[Action]:
        if self.state is _State.START:
            return [S.BAD_SEQUENCE_HELO]
        if self.state not in (_State.MAIL, _State.RCPT):
            return [S.BAD_SEQUENCE_MAIL]
        try:
            address, params = parse_path(argument, "TO", allow_null=False)
        except AddressError:
            return [S.SYNTAX_RCPT] if not argument.upper().startswith("TO:") else [S.BAD_RECIPIENT_SYNTAX]
        if params:
            return [S.BAD_PARAMETER]
        assert address is not None
        if not address.is_ascii and not self.envelope.smtputf8:
            return [S.NEED_SMTPUTF8]
        if len(self.envelope.recipients) >= self.config.max_recipients:
            return [S.TOO_MANY_RECIPIENTS]
        relay_allowed = self.authenticated_as is not None or (
            self.relay_client and self.config.role is not Role.LMTP
        )
        try:
            verdict = self.backend.check_recipient(address, relay_allowed, self.envelope.size_hint)
        except BackendUnavailable:
            return [S.LOOKUP_FAILED]
        if isinstance(verdict, Reply):
            self._log_reject("RCPT", verdict, address.address)
            return [verdict]
        self.envelope.recipients.append(verdict)
        self.state = _State.RCPT
        return [S.RECIPIENT_OK]

    def smtp_DATA(self, argument: str) -> list[Action]:
        if self.state is _State.START:
            return [S.BAD_SEQUENCE_HELO]
        if self.state is _State.READY:
            return [S.BAD_SEQUENCE_MAIL]
        if self.state is _State.MAIL:
            # RFC 5321 §3.3: no valid recipients; RFC 2920 §3.1 relies on this answer.
            return [S.NO_VALID_RECIPIENTS]
        if argument:
            return [S.SYNTAX_NO_ARGS]
        self.state = _State.DATA
        return [S.START_DATA, ReadData(self.config.max_size)]

    def smtp_RSET(self, argument: str) -> list[Action]:
        if argument:
            return [S.SYNTAX_NO_ARGS]
        self._reset_transaction()
        return [S.OK]

    def smtp_NOOP(self, argument: str) -> list[Action]:
        return [S.OK]

    def smtp_QUIT(self, argument: str) -> list[Action]:
        return [S.BYE, Close()]

    def smtp_HELP(self, argument: str) -> list[Action]:
        return [S.HELP]

    def smtp_VRFY(self, argument: str) -> list[Action]:
        if not argument:
            return [Reply.of(501, "5.5.4 Syntax: VRFY address")]
        return [S.VRFY]

    def smtp_STARTTLS(self, argument: str) -> list[Action]:
        if argument:
            return [S.SYNTAX_NO_ARGS]
        if self.tls_active:
            return [S.TLS_ACTIVE]
        if not self.config.tls_available:
            return [S.TLS_UNAVAILABLE]
        if self.state is _State.START:
            return [S.BAD_SEQUENCE_HELO]
        if self.state is not _State.READY:
            return [Reply.of(503, "5.5.1 STARTTLS not permitted during a mail transaction")]
        return [S.READY_FOR_TLS, StartTls()]

    # ------------------------------------------------------------------ AUTH (RFC 4954)
    def smtp_AUTH(self, argument: str) -> list[Action]:
        if self.state is _State.START or not self.esmtp:
            return [S.BAD_SEQUENCE_HELO]
        if self.config.role is Role.LMTP:
            return [S.NOT_IMPLEMENTED]
        if self.authenticated_as is not None:
            return [S.AUTH_ALREADY]
        if self.state is not _State.READY:
            return [S.AUTH_IN_TRANSACTION]
        if not self.auth_offered:
            return [S.ENCRYPTION_REQUIRED]
        mechanism, _, initial = argument.partition(" ")
        mechanism = mechanism.upper()
        initial = initial.strip()
        if mechanism == "PLAIN":
            if not initial:
                self._auth_step = _AuthStep.PLAIN
                return [Reply.of(334, "")]
            return self._auth_plain(initial)
        if mechanism == "LOGIN":
            if not initial:
                self._auth_step = _AuthStep.LOGIN_USER
                return [Reply.of(334, sasl.LOGIN_USERNAME_PROMPT)]
            return self._auth_login_user(initial)
        return [S.AUTH_UNKNOWN_MECHANISM]

    def _auth_continue(self, text: str) -> list[Action]:
        step = self._auth_step
        self._auth_step = None
        if text.strip() == sasl.CANCEL:
            return [S.AUTH_CANCELLED]
        if step is _AuthStep.PLAIN:
            return self._auth_plain(text.strip())
        if step is _AuthStep.LOGIN_USER:
            return self._auth_login_user(text.strip())
        password = sasl.decode_text(text.strip())
        if password is None:
            return [S.AUTH_BAD_BASE64]
        return self._auth_check(self._auth_username, password)

    def _auth_plain(self, response: str) -> list[Action]:
        parsed = sasl.parse_plain(response)
        if parsed == sasl.BAD_BASE64:
            return [S.AUTH_BAD_BASE64]
        if not isinstance(parsed, sasl.Credentials):
            return [S.AUTH_FAILED]
        return self._auth_check(parsed.username, parsed.password)

    def _auth_login_user(self, response: str) -> list[Action]:
        username = sasl.decode_text(response)
        if username is None:
            return [S.AUTH_BAD_BASE64]
        self._auth_username = username
        self._auth_step = _AuthStep.LOGIN_PASSWORD
        return [Reply.of(334, sasl.LOGIN_PASSWORD_PROMPT)]

    def _auth_check(self, username: str, password: str) -> list[Action]:
        try:
            account = self.backend.authenticate(username, password)
        except BackendUnavailable:
            return [S.AUTH_UNAVAILABLE]
        if account is None:
            self.auth_failures += 1
            # One line per failure, for the operator and for tools like fail2ban.
            log.warning(
                "authentication failed: user=<%s> client=[%s]:%d port=%d",
                username[:100], self.peer.ip, self.peer.port, self.peer.local_port,
            )
            return [S.AUTH_FAILED]
        self.authenticated_as = account
        return [S.AUTH_OK]


def replies_only(actions: Sequence[Action]) -> list[Reply]:
    """The replies among ``actions`` (handy in tests)."""
    return [a for a in actions if isinstance(a, Reply)]
