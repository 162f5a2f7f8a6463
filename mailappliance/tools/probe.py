"""Probes for every listener of a live appliance, with and without TLS (stdlib clients).

Each probe returns :class:`Check` rows: one for the clear-text conversation (greeting,
EHLO/LHLO or CAPABILITY) and one for the TLS handshake (STARTTLS, RFC 3207 §4 / RFC 2595
§3.1, or implicit TLS, RFC 8314 §3.3). The appliance's certificate is self-signed unless
configured, so certificates are not verified unless asked.
"""
from __future__ import annotations

import imaplib
import json
import smtplib
import socket
import ssl
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Callable, Optional

OK, FAIL, OFF, SKIP = "OK", "FAIL", "off", "skip"


@dataclass
class Check:
    listener: str
    port: int
    mode: str  # plain, starttls, tls, http
    result: str  # OK, FAIL, off, skip
    detail: str


def tls_context(verify: bool = False, cafile: Optional[str] = None) -> ssl.SSLContext:
    """A client context; without ``verify`` any certificate is accepted (self-signed default)."""
    if verify or cafile:
        return ssl.create_default_context(cafile=cafile)
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def tls_summary(sock: object) -> str:
    if isinstance(sock, ssl.SSLSocket):
        cipher = sock.cipher()
        return f"{sock.version()} {cipher[0] if cipher else ''}".strip()
    return "no TLS"


def first_line(text: object, width: int = 70) -> str:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def connection_reason(exc: object) -> Optional[str]:
    """"connection refused" or "timed out" when ``exc`` is one of those, else None."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return "timed out"
    return None


def failure(exc: BaseException) -> str:
    reason = connection_reason(exc)
    if reason:
        return reason
    if isinstance(exc, ssl.SSLError):
        return f"TLS: {exc.reason or exc}"
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {first_line(exc.smtp_error)}"
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return f"disconnected: {exc}" if str(exc) else "disconnected"
    return f"{type(exc).__name__}: {exc}"


class LMTP_SSL(smtplib.SMTP_SSL):
    """LMTP over implicit TLS: ``SMTP_SSL`` that says LHLO (RFC 2033 §4.1)."""

    ehlo_msg = "lhlo"


def smtp_client(protocol: str, implicit: bool, context: ssl.SSLContext, timeout: float) -> smtplib.SMTP:
    if implicit:
        return LMTP_SSL(timeout=timeout, context=context) if protocol == "lmtp" else smtplib.SMTP_SSL(timeout=timeout, context=context)
    client = smtplib.LMTP() if protocol == "lmtp" else smtplib.SMTP(timeout=timeout)
    client.timeout = timeout
    return client


def connect(client: smtplib.SMTP, host: str, port: int) -> tuple[int, bytes]:
    """``client.connect`` remembering ``host`` for the TLS handshake's SNI (smtplib only
    remembers a host given to the constructor, which would connect at once)."""
    client._host = host  # type: ignore[attr-defined]
    return client.connect(host, port)


def hello(client: smtplib.SMTP, host: str, port: int) -> tuple[int, str, str]:
    """Connect, read the greeting, send EHLO/LHLO; (greeting code, greeting, EHLO line)."""
    code, banner = connect(client, host, port)
    if code != 220:
        raise smtplib.SMTPConnectError(code, banner)
    ehlo_code, _ = client.ehlo("probe.mailappliance.invalid")
    if ehlo_code != 250:
        raise smtplib.SMTPHeloError(ehlo_code, b"refused")
    extensions = sorted(k.upper() for k in client.esmtp_features)
    return code, first_line(banner, 50), " ".join(extensions)


def probe_smtp(listener: str, host: str, port: int, protocol: str, implicit: bool, context: ssl.SSLContext, timeout: float) -> list[Check]:
    """SMTP/LMTP: greeting and EHLO/LHLO in clear, then STARTTLS (RFC 3207) and EHLO again;
    or, on an implicit-TLS port, the handshake first (RFC 8314 §3.3)."""
    verb = "LHLO" if protocol == "lmtp" else "EHLO"
    if implicit:
        client = smtp_client(protocol, True, context, timeout)
        try:
            code, banner, extensions = hello(client, host, port)
            return [Check(listener, port, "tls", OK, f"{tls_summary(client.sock)}; {code} {banner}; {verb} 250 ({extensions})")]
        except (OSError, smtplib.SMTPException) as exc:
            return [Check(listener, port, "tls", FAIL, failure(exc))]
        finally:
            _close_smtp(client)
    checks: list[Check] = []
    client = smtp_client(protocol, False, context, timeout)
    try:
        try:
            code, banner, extensions = hello(client, host, port)
        except (OSError, smtplib.SMTPException) as exc:
            return [Check(listener, port, "plain", FAIL, failure(exc)), Check(listener, port, "starttls", FAIL, "no connection")]
        checks.append(Check(listener, port, "plain", OK, f"{code} {banner}; {verb} 250 ({extensions})"))
        if not client.has_extn("starttls"):
            mode_result = SKIP if protocol == "lmtp" else FAIL
            checks.append(Check(listener, port, "starttls", mode_result, "STARTTLS not offered"))
            return checks
        try:
            client.starttls(context=context)
            ehlo_code, _ = client.ehlo("probe.mailappliance.invalid")
            auth = client.esmtp_features.get("auth", "").strip()
            note = f"; AUTH {auth}" if auth else ""
            checks.append(Check(listener, port, "starttls", OK if ehlo_code == 250 else FAIL, f"{tls_summary(client.sock)}; {verb} {ehlo_code}{note}"))
        except (OSError, smtplib.SMTPException) as exc:
            checks.append(Check(listener, port, "starttls", FAIL, failure(exc)))
        return checks
    finally:
        _close_smtp(client)


def _close_smtp(client: smtplib.SMTP) -> None:
    try:
        if client.sock is not None:
            client.quit()
    except (OSError, smtplib.SMTPException):
        pass
    client.close()


def imap_summary(imap: imaplib.IMAP4) -> str:
    """Greeting status and the capabilities that matter for logging in (RFC 3501 §7.2.1)."""
    welcome = imap.welcome.decode("utf-8", "replace") if isinstance(imap.welcome, bytes) else str(imap.welcome)
    status = welcome.split()[1] if len(welcome.split()) > 1 else welcome
    wanted = [c for c in imap.capabilities if c in ("IMAP4REV1", "STARTTLS", "LOGINDISABLED", "IDLE") or c.startswith("AUTH=")]
    return f"* {status} greeting; {len(imap.capabilities)} capabilities incl. {' '.join(wanted)}"


def probe_imap(listener: str, host: str, port: int, implicit: bool, context: ssl.SSLContext, timeout: float) -> list[Check]:
    """IMAP: greeting and CAPABILITY in clear, then STARTTLS (RFC 2595 §3.1, RFC 3501
    §6.2.1) and CAPABILITY again; or implicit TLS (RFC 8314 §3.3)."""
    if implicit:
        try:
            with imaplib.IMAP4_SSL(host, port, ssl_context=context, timeout=timeout) as secure:
                return [Check(listener, port, "tls", OK, f"{tls_summary(secure.sock)}; {imap_summary(secure)}")]
        except (OSError, imaplib.IMAP4.error) as exc:
            return [Check(listener, port, "tls", FAIL, failure(exc))]
    try:
        imap = imaplib.IMAP4(host, port, timeout=timeout)
    except (OSError, imaplib.IMAP4.error) as exc:
        return [Check(listener, port, "plain", FAIL, failure(exc)), Check(listener, port, "starttls", FAIL, "no connection")]
    checks: list[Check] = []
    try:
        caps = imap.capabilities
        checks.append(Check(listener, port, "plain", OK, imap_summary(imap)))
        if "STARTTLS" not in caps:
            checks.append(Check(listener, port, "starttls", FAIL, "STARTTLS not offered"))
            return checks
        try:
            typ, _ = imap.starttls(ssl_context=context)
            login = "LOGINDISABLED gone" if "LOGINDISABLED" not in imap.capabilities else "LOGINDISABLED still set"
            checks.append(Check(listener, port, "starttls", OK if typ == "OK" else FAIL, f"{tls_summary(imap.sock)}; {login}"))
        except (OSError, imaplib.IMAP4.error) as exc:
            checks.append(Check(listener, port, "starttls", FAIL, failure(exc)))
        return checks
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


def probe_http(listener: str, host: str, port: int, timeout: float) -> list[Check]:
    """``GET /health`` (no key needed): 200 with ``status: ok``."""
    url = f"http://{host if ':' not in host else f'[{host}]'}:{port}/health"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            body = json.loads(response.read() or b"{}")
        return [Check(listener, port, "http", OK, f"GET /health 200 {body.get('status')} (database {body.get('database')})")]
    except urllib.error.HTTPError as exc:
        return [Check(listener, port, "http", FAIL, f"GET /health {exc.code}")]
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return [Check(listener, port, "http", FAIL, failure(getattr(exc, "reason", exc)) if isinstance(exc, urllib.error.URLError) else failure(exc))]


# listener -> how to probe it (the names of DATA_DIR/ports.json)
Probe = Callable[[str, str, int, ssl.SSLContext, float], list[Check]]
PROBES: dict[str, Probe] = {
    "smtp": lambda n, h, p, c, t: probe_smtp(n, h, p, "smtp", False, c, t),
    "submission": lambda n, h, p, c, t: probe_smtp(n, h, p, "smtp", False, c, t),
    "smtps": lambda n, h, p, c, t: probe_smtp(n, h, p, "smtp", True, c, t),
    "lmtp": lambda n, h, p, c, t: probe_smtp(n, h, p, "lmtp", False, c, t),
    "lmtps": lambda n, h, p, c, t: probe_smtp(n, h, p, "lmtp", True, c, t),
    "imap": lambda n, h, p, c, t: probe_imap(n, h, p, False, c, t),
    "imaps": lambda n, h, p, c, t: probe_imap(n, h, p, True, c, t),
    "api": lambda n, h, p, c, t: probe_http(n, h, p, t),
    "mailbox-api": lambda n, h, p, c, t: probe_http(n, h, p, t),
}


def probe_all(host: str, ports: dict[str, int], context: ssl.SSLContext, timeout: float) -> list[Check]:
    """Every listener in ``PROBES`` order; port 0 is reported as off, not as a failure."""
    checks: list[Check] = []
    for name, probe in PROBES.items():
        port = ports.get(name, 0)
        if port == 0:
            checks.append(Check(name, 0, "-", OFF, "not listening (port 0, or disabled in the settings)"))
        elif port < 0:
            checks.append(Check(name, port, "-", FAIL, "port is 'auto' and there is no ports.json: is the appliance running?"))
        else:
            checks.extend(probe(name, host, port, context, timeout))
    return checks
