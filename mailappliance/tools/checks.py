"""The checks behind ``scripts/test-send``, ``test-ip``, ``test-ports`` and ``test-lmtp``
(the seed's ``npm test``, ``test:ip``, ``test:ports``, ``test:lmtp``), run against a live
appliance: ``python -m mailappliance.tools.checks send|ip|ports|lmtp [options]``.

Exit codes: 0 every check passed, 1 a check failed (one line says which), 2 usage or
configuration, 3 the appliance cannot be reached, 130 Ctrl-C, 141 standard output was
closed early (``| head``; nothing more is printed).
"""
from __future__ import annotations

import argparse
import imaplib
import json
import os
import re
import secrets
import smtplib
import ssl
import sys
import time
from contextlib import contextmanager
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY  # CRLF line ends (RFC 5321 §2.3.8); smtplib sends bytes as given
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from mailappliance.tools.endpoints import (
    DEFAULT_TIMEOUT,
    ApiClient,
    ApiRefused,
    ConfigError,
    Endpoints,
    Unreachable,
    api_key,
)
from mailappliance.tools.probe import FAIL, LMTP_SSL, connect, failure, probe_all, tls_context, tls_summary
from mailappliance.tools.terminal import INTERRUPTED_EXIT, SIGPIPE_EXIT, NoPassword, OutputClosed, ask_password, silence_stdout

PASSED, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
QUEUED_AS = re.compile(r"queued as ([0-9a-f]{24})", re.I)
DELIVERED_AS = re.compile(r"delivered as ([0-9a-f]{24})", re.I)


class CheckFailed(Exception):
    """A check did not pass (exit 1); the message is the one line printed."""


# ---------------------------------------------------------------------------- shared
def caller_path(value: str) -> Path:
    """A path argument relative to where the script was started (scripts/ change directory)."""
    return Path(os.environ.get("MAILAPPLIANCE_CALLER_CWD", ".")) / value


def common_options(parser: argparse.ArgumentParser, api: bool = True, mail: bool = True) -> None:
    group = parser.add_argument_group("where the appliance is (default: DATA_DIR/ports.json, else the settings and .env)")
    group.add_argument("--host", help="address to connect to (default: SMTP_HOST, wildcards as 127.0.0.1)")
    group.add_argument("--ports-file", type=caller_path, metavar="PATH", help="ports.json of the running appliance (default: DATA_DIR/ports.json)")
    group.add_argument("--port", action="append", default=[], metavar="NAME=PORT",
                       help="override one listener's port (names: smtp submission smtps lmtp lmtps imap imaps api mailbox-api); repeatable")
    group.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per network operation (default %(default)s)")
    if api:
        group.add_argument("--api-url", metavar="URL", help="API base URL (default: $API_URL, else from the ports)")
        group.add_argument("--api-key", metavar="KEY", help="API key (default: $MAILBOX_API_KEY or .env, else DATA_DIR/api-key)")
    if mail:
        group.add_argument("--verify", action="store_true", help="verify TLS certificates (off by default: the generated one is self-signed)")
        group.add_argument("--cafile", type=caller_path, metavar="PEM", help="trust this certificate or CA (implies --verify)")


def endpoints(args: argparse.Namespace) -> Endpoints:
    found = Endpoints.discover(host=args.host, ports_file=args.ports_file)
    for item in args.port:
        name, _, raw = item.partition("=")
        if name not in found.ports or not raw.isdigit() or int(raw) > 65535:
            raise ConfigError(f"--port {item!r}: use NAME=PORT with NAME one of {', '.join(found.ports)}")
        found.ports[name] = int(raw)
    return found


def api_client(args: argparse.Namespace, where: Endpoints) -> ApiClient:
    base = args.api_url or os.environ.get("API_URL") or where.http_url("api")
    return ApiClient(base, api_key(where.settings, args.api_key), args.timeout)


def context(args: argparse.Namespace) -> ssl.SSLContext:
    return tls_context(args.verify, str(args.cafile) if args.cafile else None)


def say(text: str = "") -> None:
    try:
        print(text, flush=True)
    except BrokenPipeError:
        raise OutputClosed() from None  # not an OSError: no SMTP or IMAP handler mistakes it for theirs


def show_json(label: str, value: Any) -> None:
    say(f"{label}:")
    say(json.dumps(value, indent=2, ensure_ascii=False))


@contextmanager
def smtp_session(client: smtplib.SMTP, protocol: str, host: str, port: int, unreachable: Callable[[Exception], bool]) -> Iterator[smtplib.SMTP]:
    """Hold an SMTP or LMTP conversation with ``client``: a socket or protocol error in it is
    :class:`Unreachable` when ``unreachable(exc)`` says so (asked after the error, so it can
    look at ``client.sock``), else :class:`CheckFailed`; the session always ends with QUIT, or
    a close when QUIT fails."""
    try:
        yield client
    except (OSError, smtplib.SMTPException) as exc:
        if unreachable(exc):
            raise Unreachable(f"cannot reach {protocol} at {host}:{port} ({failure(exc)})") from None
        raise CheckFailed(f"{protocol} on {host}:{port}: {failure(exc)}") from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


# ---------------------------------------------------------------------------- ports
def ports_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/test-ports",
        description="Probe every listener of a running appliance with and without TLS: SMTP (port-25 role and "
        "submission: greeting, EHLO, STARTTLS), SMTPS (implicit TLS), LMTP (LHLO, STARTTLS if offered) and "
        "LMTPS, IMAP (CAPABILITY, STARTTLS) and IMAPS, and GET /health on both HTTP APIs. "
        "A port set to 0 is reported as off. Exit 1 if any probe fails.",
    )
    common_options(parser, api=False)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    return parser


def run_ports(args: argparse.Namespace) -> int:
    where = endpoints(args)
    checks = probe_all(where.host, where.ports, context(args), args.timeout)
    if args.json:
        say(json.dumps([c.__dict__ for c in checks], indent=2))
    else:
        source = f"ports from {where.from_file}" if where.from_file else "ports from the settings (no ports.json)"
        say(f"appliance at {where.host} ({source})")
        rows = [[c.listener, str(c.port) if c.port else "-", c.mode, c.result, c.detail] for c in checks]
        say(_table(rows, ["LISTENER", "PORT", "MODE", "RESULT", "DETAIL"]))
    failed = [c for c in checks if c.result == FAIL]
    if failed:
        names = sorted({f"{c.listener}:{c.port}" for c in failed})
        print(f"test-ports: {len(failed)} probe(s) failed: {', '.join(names)}", file=sys.stderr)
        return FAILED
    return PASSED


def _table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in [headers, *rows])


# ---------------------------------------------------------------------------- ip selection
def ip_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/test-ip",
        description="Exercise source-IP selection on a running appliance: GET /api/ip-selection/stats, "
        "POST /api/ip-selection/test for a sender and recipients (what IP_SELECTION_API_URL would choose now), "
        "POST /api/ip-selection/clear-cache, and the stats again.",
    )
    parser.add_argument("--from", dest="sender", default="test@example.com", metavar="ADDRESS", help="sender (default %(default)s)")
    parser.add_argument("--to", action="append", metavar="ADDRESS", help="recipient; repeatable (default someone@example.org)")
    parser.add_argument("--no-clear", action="store_true", help="do not clear the cache")
    common_options(parser, mail=False)
    return parser


def run_ip(args: argparse.Namespace) -> int:
    client = api_client(args, endpoints(args))
    recipients = args.to or ["someone@example.org"]
    say(f"IP selection on {client.base_url}")
    show_json("GET /api/ip-selection/stats", client.get("/api/ip-selection/stats"))
    choice = client.post("/api/ip-selection/test", {"from": args.sender, "to": recipients, "emailId": "test-ip"})
    show_json(f"POST /api/ip-selection/test (from {args.sender} to {', '.join(recipients)})", choice)
    if not isinstance(choice, dict) or "source" not in choice:
        raise CheckFailed("the test answer has no 'source'")
    if not args.no_clear:
        show_json("POST /api/ip-selection/clear-cache", client.post("/api/ip-selection/clear-cache"))
        show_json("GET /api/ip-selection/stats", client.get("/api/ip-selection/stats"))
    say(f"selected: {choice.get('ip') or 'the default route'} (source: {choice.get('source')})")
    return PASSED


# ---------------------------------------------------------------------------- send
def send_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/test-send",
        description="Send a test message to a running appliance and confirm it arrived. Without --user it goes "
        "to the port-25 role (no AUTH; loopback is a relay client); with --user it is submitted on the "
        "submission port after STARTTLS and AUTH (or --via smtps). The arrival is confirmed with "
        "GET /api/incoming-emails/<queue id>, and with --imap by finding it in the recipient's INBOX "
        "(the recipient must be --user). Prints the queue id.",
    )
    parser.add_argument("--to", required=True, action="append", metavar="ADDRESS", help="recipient (a local mailbox to see it arrive); repeatable")
    parser.add_argument("--from", dest="sender", metavar="ADDRESS", help="sender (default: --user, else test-send@<SMTP_HOSTNAME>)")
    parser.add_argument("--user", metavar="ADDRESS", help="authenticate as this mailbox (password prompted, or --password-stdin)")
    parser.add_argument("--password-stdin", action="store_true", help="read --user's password from standard input")
    parser.add_argument("--via", choices=("mx", "submission", "smtps"), help="port role (default: submission with --user, else mx)")
    parser.add_argument("--no-tls", action="store_true", help="do not use STARTTLS on the port-25 role")
    parser.add_argument("--subject", help="subject (default: 'mailappliance test <token>')")
    parser.add_argument("--imap", action="store_true", help="also log in over IMAP as --user and find the message in INBOX")
    parser.add_argument("--wait", type=float, default=15.0, metavar="SECONDS", help="how long to wait for the arrival (default %(default)s)")
    common_options(parser)
    return parser


def run_send(args: argparse.Namespace) -> int:
    where = endpoints(args)
    via = args.via or ("submission" if args.user else "mx")
    listener = {"mx": "smtp", "submission": "submission", "smtps": "smtps"}[via]
    if via != "mx" and not args.user:
        raise ConfigError(f"--via {via} needs --user (submission requires AUTH)")
    if args.imap and not args.user:
        raise ConfigError("--imap needs --user (the recipient mailbox to log in as)")
    password = None
    if args.user:
        password = _password(args)
    port = where.port(listener)
    if port <= 0:
        raise ConfigError(f"the {listener} listener is off or unknown (port {port})")
    client = api_client(args, where)  # resolve the key before sending anything
    token = secrets.token_hex(6)
    sender = args.sender or args.user or f"test-send@{where.settings.hostname}"
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(args.to)
    message["Subject"] = args.subject or f"mailappliance test {token}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("test-send")
    message.set_content(f"A test message sent by scripts/test-send (token {token}).\n")
    tls = context(args)
    say(f"sending to {', '.join(args.to)} via {via} ({where.host}:{port})")
    smtp: smtplib.SMTP = smtplib.SMTP_SSL(timeout=args.timeout, context=tls) if via == "smtps" else smtplib.SMTP(timeout=args.timeout)

    def smtp_unreachable(exc: Exception) -> bool:
        return isinstance(exc, (ConnectionRefusedError, TimeoutError)) or (
            isinstance(exc, OSError) and not isinstance(exc, ssl.SSLError) and smtp.sock is None
        )

    with smtp_session(smtp, "SMTP", where.host, port, smtp_unreachable):
        connect(smtp, where.host, port)
        smtp.ehlo("test-send.mailappliance.invalid")
        if via != "smtps" and (via == "submission" or (not args.no_tls and smtp.has_extn("starttls"))):
            smtp.starttls(context=tls)
            smtp.ehlo("test-send.mailappliance.invalid")
        say(f"  session: {tls_summary(smtp.sock)}")
        if args.user:
            smtp.login(args.user, password or "")
            say(f"  AUTH as {args.user}: accepted")
        code, reply = smtp.mail(sender)
        if code != 250:
            raise CheckFailed(f"MAIL FROM refused: {code} {reply.decode(errors='replace')}")
        for rcpt in args.to:
            code, reply = smtp.rcpt(rcpt)
            if code not in (250, 251):
                raise CheckFailed(f"RCPT TO:<{rcpt}> refused: {code} {reply.decode(errors='replace')}")
        code, reply = smtp.data(message.as_bytes(policy=SMTP_POLICY))
        text = reply.decode(errors="replace")
        say(f"  DATA: {code} {text}")
        if code != 250:
            raise CheckFailed(f"DATA refused: {code} {text}")
    found = QUEUED_AS.search(text)
    if not found:
        raise CheckFailed(f"no queue id in the reply {text!r}")
    queue_id = found.group(1)
    record = _wait(args.wait, lambda: _incoming(client, queue_id))
    if record is None:
        raise CheckFailed(f"{queue_id} is not in /api/incoming-emails after {args.wait:.0f} s")
    say(f"  arrived: status {record.get('status')}, local {record.get('local_recipients')}, relayed {record.get('relayed_recipients')}")
    if record.get("relayed_recipients"):
        say(f"  relayed recipients are in the outbound queue: python -m mailappliance queue list --recipient {record['relayed_recipients'][0]}")
    if args.imap:
        _find_over_imap(where, args, password or "", message["Subject"], tls)
    say(f"queue id: {queue_id}")
    return PASSED


def _password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        return ask_password(f"Password for {args.user}: ")
    line = sys.stdin.readline()
    if not line:
        raise ConfigError("--password-stdin: expected --user's password on standard input")
    return line.rstrip("\r\n")


def _wait(seconds: float, probe: Callable[[], Optional[dict]]) -> Optional[dict]:
    deadline = time.monotonic() + seconds
    while True:
        value = probe()
        if value is not None or time.monotonic() >= deadline:
            return value
        time.sleep(0.2)


def _incoming(client: ApiClient, queue_id: str) -> Optional[dict]:
    try:
        return client.get(f"/api/incoming-emails/{queue_id}")
    except ApiRefused as exc:
        if exc.status == 404:
            return None
        raise


def _find_over_imap(where: Endpoints, args: argparse.Namespace, password: str, subject: str, tls: ssl.SSLContext) -> None:
    """Log in as ``--user`` (IMAPS, else IMAP with STARTTLS) and search INBOX (RFC 3501 §6.4.4)."""
    if where.port("imaps") > 0:
        imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(where.host, where.port("imaps"), ssl_context=tls, timeout=args.timeout)
    elif where.port("imap") > 0:
        imap = imaplib.IMAP4(where.host, where.port("imap"), timeout=args.timeout)
        imap.starttls(ssl_context=tls)
    else:
        raise ConfigError("--imap: both IMAP ports are off")
    try:
        imap.login(args.user, password)
        imap.select("INBOX", readonly=True)
        deadline = time.monotonic() + args.wait
        while True:
            typ, data = imap.uid("SEARCH", "CHARSET", "UTF-8", "SUBJECT", f'"{subject}"')
            uids = data[0].split() if typ == "OK" and data and data[0] else []
            if uids or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
            imap.noop()
        if not uids:
            raise CheckFailed(f"IMAP: no message with subject {subject!r} in {args.user}'s INBOX")
        say(f"  IMAP: found in {args.user}'s INBOX as UID {uids[-1].decode()}")
    except imaplib.IMAP4.error as exc:
        raise CheckFailed(f"IMAP: {exc}") from None
    finally:
        try:
            imap.logout()
        except (OSError, imaplib.IMAP4.error):
            pass


# ---------------------------------------------------------------------------- lmtp
def lmtp_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="scripts/test-lmtp",
        description="Deliver a message over LMTP (RFC 2033) to local mailboxes and show the reply for each "
        "recipient after DATA, plus the 550 an unknown recipient gets at RCPT. Exit 1 unless every --to got a "
        "2xx after DATA and the unknown recipient was refused.",
    )
    parser.add_argument("--to", required=True, action="append", metavar="ADDRESS", help="a local mailbox; repeatable")
    parser.add_argument("--from", dest="sender", default="lmtp-test@example.net", metavar="ADDRESS", help="envelope sender (default %(default)s)")
    parser.add_argument("--unknown", metavar="ADDRESS", help="the unknown recipient to add (default: no-such-user-<random>@<first --to's domain>)")
    parser.add_argument("--no-unknown", action="store_true", help="do not add an unknown recipient")
    tls_mode = parser.add_mutually_exclusive_group()
    tls_mode.add_argument("--tls", action="store_true", help="use the implicit-TLS LMTP port (LMTP_SSL_PORT)")
    tls_mode.add_argument("--no-starttls", action="store_true", help="stay in clear text even when STARTTLS is offered")
    common_options(parser, api=False)
    return parser


def run_lmtp(args: argparse.Namespace) -> int:
    where = endpoints(args)
    listener = "lmtps" if args.tls else "lmtp"
    port = where.port(listener)
    if port <= 0:
        raise ConfigError(f"the {listener} listener is off or unknown (port {port})")
    unknown = None if args.no_unknown else (args.unknown or f"no-such-user-{secrets.token_hex(4)}@{args.to[0].rsplit('@', 1)[-1]}")
    recipients = list(args.to) + ([unknown] if unknown else [])
    message = EmailMessage()
    message["From"] = args.sender
    message["To"] = ", ".join(args.to)
    message["Subject"] = f"mailappliance LMTP test {secrets.token_hex(6)}"
    message["Date"] = formatdate(localtime=True)
    message["Message-ID"] = make_msgid("test-lmtp")
    message.set_content("A test message delivered by scripts/test-lmtp.\n")
    tls = context(args)
    client: smtplib.SMTP = LMTP_SSL(timeout=args.timeout, context=tls) if args.tls else smtplib.LMTP()
    client.timeout = args.timeout
    rcpt_replies: dict[str, tuple[int, str]] = {}
    data_replies: dict[str, tuple[int, str]] = {}
    with smtp_session(client, "LMTP", where.host, port, lambda exc: client.sock is None or isinstance(exc, ConnectionRefusedError)):
        code, banner = connect(client, where.host, port)
        say(f"LMTP at {where.host}:{port}: {code} {banner.decode(errors='replace')}")
        code, _ = client.ehlo("test-lmtp.mailappliance.invalid")
        if code != 250:
            raise CheckFailed(f"LHLO refused: {code}")
        if not args.tls and not args.no_starttls and client.has_extn("starttls"):
            client.starttls(context=tls)
            client.ehlo("test-lmtp.mailappliance.invalid")
        say(f"session: {tls_summary(client.sock)}")
        code, reply = client.mail(args.sender)
        if code != 250:
            raise CheckFailed(f"MAIL FROM refused: {code} {reply.decode(errors='replace')}")
        accepted = []
        for rcpt in recipients:
            code, reply = client.rcpt(rcpt)
            rcpt_replies[rcpt] = (code, reply.decode(errors="replace"))
            if code in (250, 251):
                accepted.append(rcpt)
        if accepted:
            # RFC 2033 §4.2: one reply after the final dot per accepted recipient, in RCPT order.
            code, reply = client.data(message.as_bytes(policy=SMTP_POLICY))
            data_replies[accepted[0]] = (code, reply.decode(errors="replace"))
            for rcpt in accepted[1:]:
                code, reply = client.getreply()
                data_replies[rcpt] = (code, reply.decode(errors="replace"))
    rows = []
    for rcpt in recipients:
        rc, rt = rcpt_replies.get(rcpt, (0, "-"))
        dc, dt = data_replies.get(rcpt, (0, "-"))
        rows.append([rcpt + (" (unknown)" if rcpt == unknown else ""), f"{rc} {rt}" if rc else "-", f"{dc} {dt}" if dc else "-"])
    say(_table(rows, ["RECIPIENT", "RCPT", "AFTER DATA"]))
    problems = [r for r in args.to if not 200 <= data_replies.get(r, (0, ""))[0] < 300]
    if unknown and not 500 <= rcpt_replies.get(unknown, (0, ""))[0] < 600:
        problems.append(f"{unknown} (expected 550)")
    if problems:
        raise CheckFailed(f"not delivered as expected: {', '.join(problems)}")
    for rcpt in args.to:
        found = DELIVERED_AS.search(data_replies[rcpt][1])
        say(f"delivered to {rcpt}" + (f" as {found.group(1)}" if found else ""))
    return PASSED


# ---------------------------------------------------------------------------- main
COMMANDS: dict[str, tuple[Callable[[], argparse.ArgumentParser], Callable[[argparse.Namespace], int]]] = {
    "send": (send_parser, run_send),
    "ip": (ip_parser, run_ip),
    "ports": (ports_parser, run_ports),
    "lmtp": (lmtp_parser, run_lmtp),
}


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m mailappliance.tools.checks {{{','.join(COMMANDS)}}} [options]", file=sys.stderr)
        return USAGE
    name = argv.pop(0)
    make_parser, run = COMMANDS[name]
    try:
        args = make_parser().parse_args(argv)
    except SystemExit as done:  # --help or a usage error: argparse has written its text
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            silence_stdout()
            return SIGPIPE_EXIT
        raise done
    prefix = f"test-{name}"
    try:
        code = run(args)
        sys.stdout.flush()
        return code
    except (OutputClosed, BrokenPipeError):
        silence_stdout()
        return SIGPIPE_EXIT
    except CheckFailed as exc:
        print(f"{prefix}: FAIL: {exc}", file=sys.stderr)
        return FAILED
    except ApiRefused as exc:
        print(f"{prefix}: FAIL: the API refused: {exc}", file=sys.stderr)
        return FAILED
    except (ConfigError, NoPassword) as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return USAGE
    except Unreachable as exc:
        print(f"{prefix}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        print("", file=sys.stderr)
        return INTERRUPTED_EXIT


if __name__ == "__main__":
    sys.exit(main())
