"""One SMTP conversation that hands a message to one destination for all its recipients.

RFC 5321 §3.3 and §4 with stdlib ``smtplib`` (cooperative under gevent's monkey patch):
EHLO with the configured hostname (HELO when EHLO is refused), opportunistic STARTTLS
(RFC 3207; certificates are not verified, like Postfix ``smtp_tls_security_level=may``: an
unverified encrypted channel is still better than plain text, and if the handshake fails
the host is tried again without TLS), SIZE (RFC 1870) honoured, one reply recorded per
recipient, and the socket bound to the chosen source address.

Hosts are tried in order until one of them gives every recipient an answer; a failure
before any recipient was answered (connection refused, timeout, 4xx greeting/EHLO/MAIL)
moves on to the next host (RFC 5321 §5.1).
"""
from __future__ import annotations

import logging
import smtplib
import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Optional

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
    command_timeout: float = 300.0
    tls: str = "may"  # "may" or "none"
    require_tls: bool = False  # a smarthost with credentials: never send them in clear
    username: Optional[str] = None
    password: Optional[str] = None


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
) -> Handoff:
    """Deliver ``raw`` to the first target that answers; never raises."""
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
                replies, tls = _converse(target, options, source_ip, mail_from, recipients, raw, use_tls)
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
) -> tuple[dict[str, Reply], bool]:
    client = smtplib.SMTP(
        local_hostname=options.helo,
        timeout=options.connect_timeout,
        source_address=(source_ip, 0) if source_ip else None,
    )
    client._host = target.name  # type: ignore[attr-defined]  # SNI for STARTTLS (smtplib sets it only in __init__)
    stage = "connect"
    tls = False
    try:
        code, text = client.connect(target.address, target.port)
        if code != 220:
            raise _HostFailed(_reply(code, text, stage))
        if client.sock is not None:
            client.sock.settimeout(options.command_timeout)
        stage = "ehlo"
        code, text = client.ehlo()
        if code != 250:
            code, text = client.helo()
            if code != 250:
                raise _HostFailed(_reply(code, text, stage))
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
                refused = Reply(553, f"{target.name} does not support SMTPUTF8 (RFC 6531) for these addresses", "5.6.7", stage="mail")
                return {r: refused for r in recipients}, tls
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
            if code in (250, 251):
                accepted.append(recipient)
        if not accepted:
            _quit(client)
            return replies, tls
        stage = "data"
        try:
            data_reply = _reply(*client.data(raw), stage)
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354)
            data_reply = _reply(exc.smtp_code, exc.smtp_error, stage)
        for recipient in accepted:
            replies[recipient] = data_reply
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


def _reply(code: int, text: bytes | str, stage: str) -> Reply:
    decoded = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return Reply(int(code), " ".join(decoded.split("\n")).strip(), stage=stage)


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
