"""SMTP/LMTP replies with RFC 3463 enhanced status codes, as named constants.

Tests compare against these names (``assert reply == S.BAD_SEQUENCE_MAIL``) instead of
repeating magic strings.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Reply:
    """One SMTP reply: a code and one or more text lines (RFC 5321 §4.2)."""

    code: int
    lines: tuple[str, ...]

    @classmethod
    def of(cls, code: int, *lines: str) -> "Reply":
        return cls(code, tuple(lines) or ("",))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def encode(self) -> bytes:
        """The wire form; every line but the last uses ``code-`` (RFC 5321 §4.2.1)."""
        last = len(self.lines) - 1
        return "".join(
            f"{self.code}{'-' if i < last else ' '}{line}\r\n" for i, line in enumerate(self.lines)
        ).encode("utf-8")

    def __str__(self) -> str:
        return self.encode().decode("utf-8").rstrip("\r\n")


class S:
    """Replies used by the SMTP and LMTP sessions."""

    OK = Reply.of(250, "2.0.0 Ok")
    SENDER_OK = Reply.of(250, "2.1.0 Sender ok")
    RECIPIENT_OK = Reply.of(250, "2.1.5 Recipient ok")
    START_DATA = Reply.of(354, "End data with <CR><LF>.<CR><LF>")
    BYE = Reply.of(221, "2.0.0 Bye")
    READY_FOR_TLS = Reply.of(220, "2.0.0 Ready to start TLS")
    AUTH_OK = Reply.of(235, "2.7.0 Authentication successful")
    VRFY = Reply.of(252, "2.5.0 Cannot VRFY user, but will accept message and attempt delivery")
    HELP = Reply.of(
        214,
        "2.0.0 Commands: HELO EHLO LHLO MAIL RCPT DATA RSET NOOP QUIT HELP VRFY STARTTLS AUTH",
        "2.0.0 See RFC 5321",
    )

    # 4xx: transient
    SHUTTING_DOWN = Reply.of(421, "4.3.2 Service shutting down, try again later")
    TIMEOUT = Reply.of(421, "4.4.2 Idle too long, closing connection")
    TOO_MANY_ERRORS = Reply.of(421, "4.7.0 Too many errors, closing connection")
    TOO_MANY_CONNECTIONS = Reply.of(421, "4.7.0 Too many connections, try again later")
    TOO_MANY_RECIPIENTS = Reply.of(452, "4.5.3 Too many recipients")
    STORAGE_FAILED = Reply.of(451, "4.3.0 Local error in processing, message not stored; try again later")
    LOOKUP_FAILED = Reply.of(451, "4.3.0 Temporary lookup failure")

    # 5xx: syntax and sequence
    UNRECOGNIZED = Reply.of(500, "5.5.2 Command unrecognized")
    LINE_TOO_LONG = Reply.of(500, "5.5.2 Line too long")
    BAD_ENCODING = Reply.of(500, "5.5.2 Command is not valid UTF-8")
    CONTROL_CHARACTERS = Reply.of(501, "5.5.2 Syntax error: control characters in the command")
    USE_LHLO = Reply.of(500, "5.5.1 This is LMTP: use LHLO")
    NOT_IMPLEMENTED = Reply.of(502, "5.5.1 Command not implemented")
    SYNTAX_HELO = Reply.of(501, "5.5.4 Syntax: HELO/EHLO/LHLO domain")
    SYNTAX_MAIL = Reply.of(501, "5.5.4 Syntax: MAIL FROM:<address> [parameters]")
    SYNTAX_RCPT = Reply.of(501, "5.5.4 Syntax: RCPT TO:<address> [parameters]")
    SYNTAX_NO_ARGS = Reply.of(501, "5.5.4 Syntax: this command takes no arguments")
    BAD_SENDER_SYNTAX = Reply.of(501, "5.1.7 Bad sender address syntax")
    BAD_RECIPIENT_SYNTAX = Reply.of(501, "5.1.3 Bad recipient address syntax")
    BAD_PARAMETER = Reply.of(555, "5.5.4 Unsupported MAIL/RCPT parameter")
    BAD_SEQUENCE_HELO = Reply.of(503, "5.5.1 Send HELO/EHLO first")
    BAD_SEQUENCE_NESTED_MAIL = Reply.of(503, "5.5.1 Nested MAIL command")
    BAD_SEQUENCE_MAIL = Reply.of(503, "5.5.1 Need MAIL command")
    NO_VALID_RECIPIENTS = Reply.of(554, "5.5.1 No valid recipients")
    TLS_ACTIVE = Reply.of(503, "5.5.1 TLS already active")
    TLS_UNAVAILABLE = Reply.of(502, "5.5.1 STARTTLS not available")
    MESSAGE_TOO_BIG = Reply.of(552, "5.3.4 Message size exceeds fixed maximum message size")
    DATA_LINE_TOO_LONG = Reply.of(
        550, "5.6.0 Message has a line longer than 1000 octets (RFC 5321 section 4.5.3.1.6)"
    )
    BARE_LINE_ENDING = Reply.of(
        550, "5.6.0 Message has a bare LF or CR; lines must end with CRLF (RFC 5321 section 2.3.8)"
    )
    NEED_SMTPUTF8 = Reply.of(553, "5.6.7 Non-ASCII address requires the SMTPUTF8 parameter")
    UNSTORABLE = Reply.of(554, "5.6.0 Message structure cannot be stored (too complex or malformed)")
    TOO_MANY_HOPS = Reply.of(554, "5.4.6 Too many hops")  # RFC 5321 §6.3: a mail loop

    # 5xx: policy
    AUTH_REQUIRED = Reply.of(530, "5.7.0 Authentication required")
    MUST_STARTTLS = Reply.of(530, "5.7.0 Must issue a STARTTLS command first")
    ENCRYPTION_REQUIRED = Reply.of(
        538, "5.7.11 Encryption required for requested authentication mechanism"
    )
    AUTH_ALREADY = Reply.of(503, "5.5.1 Already authenticated")
    AUTH_IN_TRANSACTION = Reply.of(503, "5.5.1 AUTH not permitted during a mail transaction")
    AUTH_UNKNOWN_MECHANISM = Reply.of(504, "5.5.4 Unrecognized authentication mechanism")
    AUTH_CANCELLED = Reply.of(501, "5.7.0 Authentication cancelled")
    AUTH_BAD_BASE64 = Reply.of(501, "5.5.2 Cannot decode base64 response")
    AUTH_FAILED = Reply.of(535, "5.7.8 Authentication credentials invalid")
    AUTH_UNAVAILABLE = Reply.of(454, "4.7.0 Temporary authentication failure")
    SENDER_NOT_OWNED = Reply.of(553, "5.7.1 Sender address not owned by the authenticated user")
    RELAY_DENIED = Reply.of(554, "5.7.1 Relay access denied")
    NO_SUCH_USER = Reply.of(550, "5.1.1 Recipient address rejected: no such mailbox")
    MAILBOX_FULL = Reply.of(552, "5.2.2 Mailbox full")

    # 2xx after DATA
    @staticmethod
    def queued(queue_id: str) -> Reply:
        return Reply.of(250, f"2.0.0 Ok: queued as {queue_id}")

    @staticmethod
    def delivered(address: str, queue_id: str) -> Reply:
        return Reply.of(250, f"2.0.0 <{address}> Ok: delivered as {queue_id}")

    @staticmethod
    def greeting(hostname: str, service: str = "ESMTP") -> Reply:
        return Reply.of(220, f"{hostname} {service} mailappliance ready")
