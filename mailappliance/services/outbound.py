"""One SMTP conversation that hands a message to one destination for all its recipients.

RFC 5321 §3.3 and §4 with stdlib ``smtplib`` (cooperative under gevent's monkey patch):
EHLO with the configured hostname (HELO when EHLO is refused), opportunistic STARTTLS
(RFC 3207; certificates are not verified, like Postfix ``smtp_tls_security_level=may``: an
unverified encrypted channel is still better than plain text, and if the handshake fails
the host is tried again without TLS), SIZE (RFC 1870) honoured, one reply recorded per
recipient, and the socket bound to the chosen source address.

Hosts are tried in order until one of them gives every recipient an answer; a failure
before any recipient was answered (connection refused, timeout, 4xx greeting/EHLO/MAIL)
moves on to the next host (RFC 5321 §5.1). Once the final "." has been sent, a timeout or
a lost connection does not: the message may have been taken, so the recipients are
deferred ("may be sent more than once", like Postfix) rather than given to a second host.

Timeouts are per stage (RFC 5321 §4.5.3.2): greeting 5 min, MAIL/RCPT (and the other
commands) 5 min, DATA initiation 2 min, each data block 3 min, end of data 10 min.

A peer whose greeting or EHLO reply names this appliance's own hostname is this
appliance (an MX or address literal pointing back here): the recipients bounce with
"5.4.6 mail for <domain> loops back to myself" (Postfix wording) instead of looping.
"""
from __future__ import annotations

import logging
import re
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

from mailappliance.services.bounces import Reply
from mailappliance.services.mx import MxHost

log = logging.getLogger("mailappliance.outbound")


@dataclass
class Target:
    """Where to connect: name and address of one host, and the port."""

    name: str
    address: str
    port: int


@dataclass
class SmtpOptions:
    helo: str
    port: int = 25
    connect_timeout: float = 30.0
    greeting_timeout: float = 300.0  # RFC 5321 §4.5.3.2.1 initial 220
    command_timeout: float = 300.0  # §4.5.3.2.2-3 MAIL, RCPT (and EHLO, STARTTLS, AUTH)
    data_init_timeout: float = 120.0  # §4.5.3.2.4 the 354 after DATA
    data_block_timeout: float = 180.0  # §4.5.3.2.5 each block of the message sent
    data_end_timeout: float = 600.0  # §4.5.3.2.6 the reply after the final "."
    tls: str = "may"  # "may" or "none"
    require_tls: bool = False  # a smarthost with credentials: never send them in clear
    username: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)


DATA_BLOCK = 64 * 1024  # bytes sent under one data-block timeout


@dataclass
class Handoff:
    """The result of delivering to one destination: a reply per recipient and how it went."""

    replies: dict[str, Reply]
    mx_host: Optional[str] = None
    mx_address: Optional[str] = None
    source_ip: Optional[str] = None
    tls: bool = False
    tried: list[str] = field(default_factory=list)
    elapsed: float = 0.0


class _HostFailed(Exception):
    """This host gave no answer for the recipients; try the next one."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(reply.describe())
        self.reply = reply


_TLS_CONTEXT: Optional[ssl.SSLContext] = None


def opportunistic_tls() -> ssl.SSLContext:
    global _TLS_CONTEXT
    if _TLS_CONTEXT is None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        _TLS_CONTEXT = context
    return _TLS_CONTEXT


def targets(hosts: list[MxHost], port: int) -> list[Target]:
    return [Target(h.name, address, port) for h in hosts for address in h.addresses]


def hand_off(
    targets_: list[Target],
    options: SmtpOptions,
    source_ip: Optional[str],
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    domain: str = "",
    may_send: Optional[Callable[[], bool]] = None,
) -> Handoff:
    """Deliver ``raw`` to the first target that answers; never raises.

    ``may_send`` is asked right before DATA: when it says no (the queue lease was lost),
    the transaction is abandoned and the recipients get a 4xx reply.
    """
    started = time.monotonic()
    result = Handoff(replies={}, source_ip=source_ip)
    last: Reply = Reply(451, "no destination host to try", "4.4.0", stage="connect")
    if source_ip:
        # A socket bound to an IPv4 address cannot reach an IPv6 one, and the reverse.
        family = ":" in source_ip
        usable = [t for t in targets_ if (":" in t.address) == family]
        if not usable and targets_:
            last = Reply(451, f"no address of the destination in the family of the source IP {source_ip}", "4.4.0", stage="connect")
        targets_ = usable
    for target in targets_:
        result.tried.append(f"{target.name}[{target.address}]")
        for use_tls in ((True, False) if options.tls == "may" else (False,)):
            try:
                replies, tls = _converse(target, options, source_ip, mail_from, recipients, raw, use_tls, domain or target.name, may_send)
            except _TlsFailed as exc:
                last = exc.reply
                if options.require_tls:
                    break
                log.info("STARTTLS with %s[%s] failed (%s); trying without TLS", target.name, target.address, exc.reply.text)
                continue
            except _HostFailed as exc:
                last = exc.reply
                log.info("%s[%s]: %s", target.name, target.address, last.describe())
                break
            result.replies = replies
            result.mx_host, result.mx_address, result.tls = target.name, target.address, tls
            result.elapsed = time.monotonic() - started
            return result
    result.replies = {r: last for r in recipients}
    result.elapsed = time.monotonic() - started
    return result


class _TlsFailed(_HostFailed):
    pass


def _converse(
    target: Target,
    options: SmtpOptions,
    source_ip: Optional[str],
    mail_from: str,
    recipients: list[str],
    raw: bytes,
    use_tls: bool,
    domain: str,
    may_send: Optional[Callable[[], bool]] = None,
) -> tuple[dict[str, Reply], bool]:
    client = _Client(
        local_hostname=options.helo,
        timeout=options.connect_timeout,
        source_address=(source_ip, 0) if source_ip else None,
    )
    client.greeting_timeout = options.greeting_timeout
    client._host = target.name  # type: ignore[attr-defined]  # SNI for STARTTLS (smtplib sets it only in __init__)
    stage = "connect"
    tls = False
    try:
        code, text = client.connect(target.address, target.port)
        if code != 220:
            raise _HostFailed(_reply(code, text, stage))
        _check_loop(text, options.helo, domain, "connect")
        if client.sock is not None:
            client.sock.settimeout(options.command_timeout)
        stage = "ehlo"
        code, text = client.ehlo()
        if code != 250:
            code, text = client.helo()
            if code != 250:
                raise _HostFailed(_reply(code, text, stage))
        _check_loop(text, options.helo, domain, stage)
        if use_tls and client.has_extn("starttls"):
            stage = "starttls"
            try:
                code, text = client.starttls(context=opportunistic_tls())
            except (ssl.SSLError, OSError, ValueError, smtplib.SMTPException) as exc:
                raise _TlsFailed(Reply(451, f"TLS handshake failed: {exc}", "4.7.0", stage=stage)) from None
            tls = True
            stage = "ehlo"
            code, text = client.ehlo()
            if code != 250:
                raise _HostFailed(_reply(code, text, stage))
        elif options.require_tls:
            raise _TlsFailed(Reply(451, "the relay host offers no STARTTLS; credentials not sent", "4.7.0", stage="starttls"))
        if options.username:
            stage = "auth"
            try:
                client.login(options.username, options.password or "")
            except smtplib.SMTPAuthenticationError as exc:
                raise _HostFailed(_reply(exc.smtp_code, exc.smtp_error, stage)) from None
        mail_options = []
        if client.has_extn("size"):
            limit = client.esmtp_features.get("size", "").strip()
            if limit.isdigit() and int(limit) and len(raw) > int(limit):
                too_big = Reply(552, f"message of {len(raw)} bytes exceeds the {limit}-byte limit of {target.name}", "5.3.4", stage="mail")
                return {r: too_big for r in recipients}, tls
            mail_options.append(f"SIZE={len(raw)}")
        if client.has_extn("8bitmime") and not raw.isascii():
            mail_options.append("BODY=8BITMIME")
        if not (mail_from + "".join(recipients)).isascii():
            if not client.has_extn("smtputf8"):
                # Another MX host may support it (the last refusal bounces).
                raise _HostFailed(Reply(553, f"{target.name} does not support SMTPUTF8 (RFC 6531) for these addresses", "5.6.7", stage="mail"))
            mail_options.append("SMTPUTF8")
        stage = "mail"
        code, text = client.mail(mail_from, mail_options)
        if code != 250:
            reply = _reply(code, text, stage)
            if reply.temporary:
                raise _HostFailed(reply)
            return {r: reply for r in recipients}, tls
        stage = "rcpt"
        replies: dict[str, Reply] = {}
        accepted = []
        for recipient in recipients:
            code, text = client.rcpt(recipient)
            replies[recipient] = _reply(code, text, stage)
            if 200 <= code < 300:  # RFC 5321 §4.2.1: any 2xx is a positive completion
                accepted.append(recipient)
        if not accepted:
            _quit(client)
            return replies, tls
        if may_send is not None and not may_send():
            _quit(client)
            lost = Reply(451, "delivery abandoned before DATA: the queue lease was lost", "4.3.0", stage="local")
            return {r: lost if r in accepted else reply for r, reply in replies.items()}, tls
        stage = "data"
        data_reply = _send_data(client, options, raw, target)
        for recipient in accepted:
            replies[recipient] = data_reply
        if data_reply.stage != "end-of-data":
            _quit(client)
        return replies, tls
    except _HostFailed:
        _close(client)
        raise
    except smtplib.SMTPServerDisconnected as exc:
        _close(client)
        if "timed out" in str(exc):  # smtplib reports a read timeout as a disconnection
            raise _HostFailed(Reply(451, f"timeout during {stage} with {target.name}[{target.address}]", "4.4.2", stage=stage)) from None
        raise _HostFailed(Reply(421, f"connection lost during {stage}: {exc}", "4.4.2", stage=stage)) from None
    except smtplib.SMTPResponseException as exc:
        _close(client)
        raise _HostFailed(_reply(exc.smtp_code, exc.smtp_error, stage)) from None
    except (socket.timeout, TimeoutError):
        _close(client)
        raise _HostFailed(Reply(451, f"timeout during {stage} with {target.name}[{target.address}]", "4.4.2", stage=stage)) from None
    except OSError as exc:
        _close(client)
        reason = exc.strerror or str(exc) or exc.__class__.__name__
        raise _HostFailed(Reply(451, f"{stage} to {target.name}[{target.address}]:{target.port} failed: {reason}", "4.4.1", stage=stage)) from None
    except smtplib.SMTPException as exc:
        _close(client)
        raise _HostFailed(Reply(451, f"SMTP error during {stage}: {exc}", "4.4.0", stage=stage)) from None


class _Client(smtplib.SMTP):
    """smtplib with its own greeting timeout (the connect timeout covers only the TCP handshake)."""

    greeting_timeout: float = 300.0

    def _get_socket(self, host, port, timeout):  # type: ignore[no-untyped-def]
        sock = super()._get_socket(host, port, timeout)
        sock.settimeout(self.greeting_timeout)
        return sock


class _Loop(_HostFailed):
    pass


def _check_loop(text: bytes | str, myself: str, domain: str, stage: str) -> None:
    """RFC 5321 §6.3: the peer names itself as this host, so delivering would loop."""
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    words = decoded.split()
    if words and myself and words[0].rstrip(".").lower() == myself.rstrip(".").lower():
        raise _Loop(Reply(554, f"mail for {domain} loops back to myself", "5.4.6", stage=stage))


def _send_data(client: smtplib.SMTP, options: SmtpOptions, raw: bytes, target: Target) -> Reply:
    """DATA, the message in blocks, the final "." (RFC 5321 §4.1.1.4), with the timeouts of
    §4.5.3.2.4-6. After the "." a timeout or lost connection is not retried elsewhere."""
    assert client.sock is not None
    client.sock.settimeout(options.data_init_timeout)
    client.putcmd("data")
    code, text = client.getreply()
    if code != 354:
        return _reply(code, text, "data")
    payload = re.sub(rb"(?m)^\.", b"..", raw)
    if not payload.endswith(b"\r\n"):
        payload += b"\r\n"
    payload += b".\r\n"
    client.sock.settimeout(options.data_block_timeout)
    view = memoryview(payload)
    for start in range(0, len(view), DATA_BLOCK):
        client.send(bytes(view[start : start + DATA_BLOCK]))
    client.sock.settimeout(options.data_end_timeout)
    try:
        code, text = client.getreply()
    except (smtplib.SMTPServerDisconnected, OSError) as exc:
        _close(client)
        what = "timeout" if "timed out" in str(exc) or isinstance(exc, (socket.timeout, TimeoutError)) else "lost connection"
        return Reply(
            451,
            f"{what} with {target.name}[{target.address}] after end of data; message may be sent more than once",
            "4.4.2",
            stage="end-of-data",
        )
    return _reply(code, text, "data")


def _reply(code: int, text: bytes | str, stage: str) -> Reply:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return Reply(int(code), " ".join(decoded.split("\n")).strip(), stage=stage, remote=True)


def _quit(client: smtplib.SMTP) -> None:
    try:
        client.quit()
    except (smtplib.SMTPException, OSError):
        _close(client)


def _close(client: smtplib.SMTP) -> None:
    try:
        client.close()
    except OSError:
        pass
