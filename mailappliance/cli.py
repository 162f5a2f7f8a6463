"""``python -m mailappliance mailbox|queue ...``: steer a live appliance through its REST API.

The commands never open the database: they call the running appliance's HTTP APIs
(mailboxes on ``MAILBOX_API_PORT``, the queue on ``API_PORT``), found as
:mod:`mailappliance.tools.endpoints` explains. Exit codes: 0 done, 1 the API said no
(its message on stderr), 2 usage or configuration, 3 the appliance cannot be reached.

Passwords are never taken from the command line: ``ps`` and ``/proc/<pid>/cmdline``
show every process's arguments to every local user, and shells keep them in their
history. They are prompted for (twice, without echo) or read from standard input with
``--password-stdin``; without a terminal they must come that way.

Output piped into a reader that stops early (``| head -1``) ends the command quietly with
exit code 141 (128 + SIGPIPE, as a shell reports for a program SIGPIPE killed); Ctrl-C
ends it with 130.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, Optional, TextIO
from urllib.parse import quote

from mailappliance.tools.endpoints import (
    DEFAULT_TIMEOUT,
    ApiClient,
    ApiRefused,
    ConfigError,
    Endpoints,
    Unreachable,
    api_key,
)
from mailappliance.tools.terminal import INTERRUPTED_EXIT, SIGPIPE_EXIT, NoPassword, ask_password, silence_stdout

OK, REFUSED, USAGE, UNREACHABLE = 0, 1, 2, 3
QUEUE_STATUSES = ("queued", "sending", "deferred", "sent", "partial", "bounced")
WAITING = ("queued", "sending", "deferred")  # the statuses with a next attempt to show
PAGE_MAX = 500  # the API's largest page (web/pagination.py)


class UsageError(Exception):
    """Bad input found after argument parsing (exit 2)."""


# ---------------------------------------------------------------------------- parser
def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("appliance")
    group.add_argument("--api-url", metavar="URL", help="API base URL (default: $API_URL, else DATA_DIR/ports.json, else API_PORT on 127.0.0.1)")
    group.add_argument(
        "--mailbox-api-url", metavar="URL",
        help="Mailbox API base URL (default: $MAILBOX_API_URL, else DATA_DIR/ports.json, else MAILBOX_API_PORT on 127.0.0.1)",
    )
    group.add_argument("--api-key", metavar="KEY", help="API key (default: $MAILBOX_API_KEY or .env, else DATA_DIR/api-key)")
    group.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS", help="per request (default %(default)s)")
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _connection_options()
    parser = argparse.ArgumentParser(
        prog="python -m mailappliance",
        description="Run the mail appliance (no command, or 'serve'), or manage a running one through its REST API.",
        epilog="Exit codes: 0 ok, 1 the API refused (message on stderr), 2 usage, 3 the appliance cannot be reached.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{serve,mailbox,queue}")
    commands.add_parser("serve", help="run the appliance in the foreground (the default)",
                        description="Run the appliance in the foreground; settings come from the environment and .env.")

    mailbox = commands.add_parser("mailbox", help="create, list, delete mailboxes; change a password")
    mailbox_commands = mailbox.add_subparsers(dest="action", metavar="{add,list,delete,passwd}", required=True)
    add = mailbox_commands.add_parser("add", parents=[common], help="create a mailbox (the password is prompted for)",
                                      description="Create a mailbox with INBOX, Sent, Drafts, Trash and Junk.")
    add.add_argument("address")
    add.add_argument("--quota", type=int, metavar="BYTES", help="bytes, 0 for unlimited (default: MAILBOX_QUOTA)")
    add.add_argument("--password-stdin", action="store_true", help="read the password from the first line of standard input")
    add.add_argument("--json", action="store_true", help="print the created mailbox as JSON")
    listing = mailbox_commands.add_parser("list", parents=[common], help="list mailboxes")
    listing.add_argument("--json", action="store_true", help="print JSON")
    delete = mailbox_commands.add_parser("delete", parents=[common], help="delete a mailbox and all its mail",
                                         description="Delete a mailbox with all its folders and messages. Asks first on a terminal.")
    delete.add_argument("address")
    delete.add_argument("--yes", "-y", action="store_true", help="do not ask (required when standard input is not a terminal)")
    passwd = mailbox_commands.add_parser(
        "passwd", parents=[common], help="change a mailbox's password",
        description="Change a mailbox's password. The API requires the current password (an API key alone cannot "
        "take over an account), so both are asked for; with --password-stdin the first line is the current "
        "password and the second the new one.",
    )
    passwd.add_argument("address")
    passwd.add_argument("--password-stdin", action="store_true", help="read the current and the new password, one per line, from standard input")

    queue = commands.add_parser("queue", help="inspect, retry and delete outbound messages")
    queue_commands = queue.add_subparsers(dest="action", metavar="{list,show,retry,delete}", required=True)
    qlist = queue_commands.add_parser("list", parents=[common], help="list the outbound queue, newest first")
    qlist.add_argument("--status", choices=QUEUE_STATUSES)
    qlist.add_argument("--sender", metavar="ADDRESS")
    qlist.add_argument("--recipient", metavar="ADDRESS")
    qlist.add_argument("--limit", type=int, default=50, metavar="N", help=f"at most N messages, 1..{PAGE_MAX} (default %(default)s)")
    qlist.add_argument("--page", type=int, default=1, metavar="P")
    qlist.add_argument("--json", action="store_true", help="print the API's JSON")
    show = queue_commands.add_parser("show", parents=[common], help="one message with its recipients and every delivery attempt")
    show.add_argument("id")
    form = show.add_mutually_exclusive_group()
    form.add_argument("--json", action="store_true", help="print the API's JSON")
    form.add_argument("--raw", action="store_true", help="write the stored message (RFC 5322 bytes) to standard output")
    retry = queue_commands.add_parser("retry", parents=[common], help="deliver a deferred or bounced message again now")
    retry.add_argument("id")
    qdelete = queue_commands.add_parser("delete", parents=[common], help="remove a message from the queue")
    qdelete.add_argument("id")
    return parser


# ---------------------------------------------------------------------------- helpers
class Context:
    def __init__(self, args: argparse.Namespace, stdin: TextIO, stdout: TextIO, stderr: TextIO) -> None:
        self.args = args
        self.stdin = stdin
        self.stdout = stdout
        self.stderr = stderr
        self._endpoints: Optional[Endpoints] = None
        self._key: Optional[str] = None

    def endpoints(self) -> Endpoints:
        if self._endpoints is None:
            self._endpoints = Endpoints.discover()
        return self._endpoints

    def key(self) -> str:
        if self._key is None:
            self._key = api_key(self.endpoints().settings, self.args.api_key)
        return self._key

    def _url(self, flag: Optional[str], env_name: str, listener: str) -> str:
        if flag:
            return flag
        if os.environ.get(env_name):
            return os.environ[env_name]
        return self.endpoints().http_url(listener)

    def api(self) -> ApiClient:
        return ApiClient(self._url(self.args.api_url, "API_URL", "api"), self.key(), self.args.timeout)

    def mailbox_api(self) -> ApiClient:
        if not (self.args.mailbox_api_url or os.environ.get("MAILBOX_API_URL")) and self.endpoints().port("mailbox-api") == 0:
            return self.api()  # the Mailbox API port is off: /api/mailboxes is on API_PORT too
        return ApiClient(self._url(self.args.mailbox_api_url, "MAILBOX_API_URL", "mailbox-api"), self.key(), self.args.timeout)

    def out(self, text: str = "") -> None:
        print(text, file=self.stdout)

    def err(self, text: str) -> None:
        print(f"mailappliance: {text}", file=self.stderr)

    def json(self, value: Any) -> None:
        json.dump(value, self.stdout, indent=2, ensure_ascii=False)
        self.stdout.write("\n")

    def read_secret_lines(self, count: int) -> list[str]:
        lines = []
        for _ in range(count):
            line = self.stdin.readline()
            if not line:
                raise UsageError(f"--password-stdin: expected {count} line(s) on standard input")
            lines.append(line.rstrip("\r\n"))
        return lines

    def prompt_new_password(self, address: str) -> str:
        first = ask_password(f"New password for {address}: ", self.stdin)
        second = ask_password("Repeat it: ", self.stdin)
        if first != second:
            raise UsageError("the passwords do not match")
        return first


def table(rows: list[list[str]], headers: list[str]) -> str:
    widths = [max(len(str(row[i])) for row in [headers, *rows]) for i in range(len(headers))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [headers, *rows]]
    return "\n".join(lines)


def clip(text: Any, width: int) -> str:
    value = "" if text is None else str(text)
    value = " ".join(value.split())
    return value if len(value) <= width else value[: width - 1] + "…"


def when(value: Any) -> str:
    """ISO 8601 as ``YYYY-MM-DD HH:MM:SS`` (the API's times are UTC); '-' when absent."""
    if not value:
        return "-"
    text = str(value).replace("T", " ")
    return text[:19]


def human_bytes(value: Any) -> str:
    if not isinstance(value, int):
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{int(size)} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)


def path_id(value: str) -> str:
    return quote(value, safe="@")


# ---------------------------------------------------------------------------- mailbox
def mailbox_add(ctx: Context) -> int:
    a = ctx.args
    if a.quota is not None and a.quota < 0:
        raise UsageError("--quota must be 0 (unlimited) or more bytes")
    password = ctx.read_secret_lines(1)[0] if a.password_stdin else ctx.prompt_new_password(a.address)
    body: dict[str, Any] = {"username": a.address, "password": password}
    if a.quota is not None:
        body["quota"] = a.quota
    created = ctx.mailbox_api().post("/api/mailboxes", body)
    if a.json:
        ctx.json(created)
    else:
        quota = created.get("quota") or 0
        ctx.out(f"created {created.get('username')} (quota: {human_bytes(quota) if quota else 'unlimited'})")
    return OK


def mailbox_list(ctx: Context) -> int:
    client = ctx.mailbox_api()
    mailboxes: list[dict] = []
    page, total = 1, None
    while total is None or len(mailboxes) < total:
        answer = client.get("/api/mailboxes", page=page, limit=PAGE_MAX)
        mailboxes.extend(answer.get("mailboxes") or [])
        total = int(answer.get("total") or 0)
        if not answer.get("mailboxes"):
            break
        page += 1
    if ctx.args.json:
        ctx.json({"mailboxes": mailboxes, "total": total})
        return OK
    rows = [
        [m.get("username", ""), human_bytes(m.get("usedBytes")), human_bytes(m["quota"]) if m.get("quota") else "unlimited", when(m.get("createdAt"))]
        for m in mailboxes
    ]
    ctx.out(table(rows, ["ADDRESS", "USED", "QUOTA", "CREATED"]))
    ctx.out(f"{total} mailbox{'es' if total != 1 else ''}")
    return OK


def mailbox_delete(ctx: Context) -> int:
    a = ctx.args
    if not a.yes:
        if not ctx.stdin.isatty():
            raise UsageError("mailbox delete removes every message of the mailbox: confirm with --yes")
        ctx.stderr.write(f"Delete {a.address} with all its folders and messages? [y/N] ")
        ctx.stderr.flush()
        if ctx.stdin.readline().strip().lower() not in ("y", "yes"):
            ctx.err("not deleted")
            return REFUSED
    answer = ctx.mailbox_api().delete(f"/api/mailboxes/{path_id(a.address)}")
    ctx.out(answer.get("message") or f"deleted {a.address}")
    return OK


def mailbox_passwd(ctx: Context) -> int:
    a = ctx.args
    if a.password_stdin:
        old, new = ctx.read_secret_lines(2)
    else:
        old = ask_password(f"Current password for {a.address}: ", ctx.stdin)
        new = ctx.prompt_new_password(a.address)
    answer = ctx.mailbox_api().post(f"/api/mailboxes/{path_id(a.address)}/change-password", {"oldPassword": old, "newPassword": new})
    ctx.out(f"{a.address}: {answer.get('message') or 'password changed'}")
    return OK


# ---------------------------------------------------------------------------- queue
def _recipients(item: dict) -> list[str]:
    to = item.get("to")
    if isinstance(to, list):
        return [str(t) for t in to]
    if isinstance(to, str) and to:
        return [to]
    return [str(r.get("address")) for r in item.get("recipients") or [] if isinstance(r, dict)]


def _to_cell(item: dict) -> str:
    recipients = _recipients(item)
    if not recipients:
        return "-"
    more = f" +{len(recipients) - 1}" if len(recipients) > 1 else ""
    return clip(recipients[0], 32) + more


def queue_list(ctx: Context) -> int:
    a = ctx.args
    if not 1 <= a.limit <= PAGE_MAX:
        raise UsageError(f"--limit must be between 1 and {PAGE_MAX}")
    if a.page < 1:
        raise UsageError("--page must be 1 or more")
    answer = ctx.api().get("/api/emails", status=a.status, sender=a.sender, recipient=a.recipient, limit=a.limit, page=a.page)
    if a.json:
        ctx.json(answer)
        return OK
    emails = answer.get("emails") or []
    rows = [
        [
            str(e.get("id", "")), str(e.get("status", "")), str(e.get("attempts", 0)), clip(e.get("from") or "<>", 32),
            _to_cell(e), clip(e.get("subject"), 40), when(e.get("next_attempt_at")) if e.get("status") in WAITING else "-",
        ]
        for e in emails
    ]
    ctx.out(table(rows, ["ID", "STATUS", "ATTEMPTS", "FROM", "TO", "SUBJECT", "NEXT ATTEMPT (UTC)"]))
    total = answer.get("total", len(emails))
    ctx.out(f"{len(emails)} of {total} (page {answer.get('page', a.page)} of {max(answer.get('pages', 1), 1)})")
    return OK


def queue_show(ctx: Context) -> int:
    a = ctx.args
    client = ctx.api()
    if a.raw:
        data = client.call("GET", f"/api/emails/{path_id(a.id)}/raw", raw=True)
        ctx.stdout.flush()
        buffer = getattr(ctx.stdout, "buffer", None)
        if buffer is not None:
            buffer.write(data)
            buffer.flush()
        else:
            ctx.stdout.write(data.decode("utf-8", "replace"))
        return OK
    email = client.get(f"/api/emails/{path_id(a.id)}")
    if a.json:
        ctx.json(email)
        return OK
    for line in describe_email(email):
        ctx.out(line)
    return OK


def describe_email(e: dict) -> list[str]:
    """A readable page for one queued message: summary, recipients, attempts, message."""
    fields = [
        ("id", e.get("id")), ("queue id", e.get("queue_id")), ("status", e.get("status")), ("attempts", attempts_text(e)),
        ("from", e.get("from") or "<>"), ("to", ", ".join(_recipients(e))), ("subject", e.get("subject")),
        ("message-id", e.get("message_id")), ("size", human_bytes(e.get("size"))), ("source", e.get("source")),
        ("created", when(e.get("created_at"))), ("updated", when(e.get("updated_at"))),
        ("last attempt", when(e.get("last_attempt_at"))),
        ("next attempt", when(e.get("next_attempt_at")) if e.get("status") in WAITING else None),
        ("last error", e.get("last_error")),
    ]
    lines = [f"{name + ':':14}{value}" for name, value in fields if value not in (None, "", "-")]
    lines.append("(times in UTC)")
    recipients = [r for r in e.get("recipients") or [] if isinstance(r, dict)]
    if recipients:
        lines += ["", "Recipients:"]
        rows = [[str(r.get("address")), str(r.get("status")), str(r.get("attempts", 0)), str(r.get("code") or ""), clip(r.get("response"), 60)] for r in recipients]
        lines += ["  " + line for line in table(rows, ["ADDRESS", "STATUS", "ATTEMPTS", "CODE", "RESPONSE"]).splitlines()]
    history = [h for h in e.get("history") or [] if isinstance(h, dict)]
    lines += ["", f"Delivery history ({len(history)} {'entry' if len(history) == 1 else 'entries'}):"]
    if history:
        rows = [
            [when(h.get("at")), str(h.get("domain") or ""), str(h.get("mx_host") or "-"), str(h.get("ip") or "default"),
             "yes" if h.get("tls") else "no", clip(_reply_text(h.get("reply")), 60)]
            for h in history
        ]
        lines += ["  " + line for line in table(rows, ["AT", "DOMAIN", "MX", "SOURCE IP", "TLS", "REPLY"]).splitlines()]
    else:
        lines.append("  none yet")
    message = e.get("message") if isinstance(e.get("message"), dict) else None
    if message:
        attachments = message.get("attachments") or []
        if attachments:
            lines += ["", "Attachments:"]
            lines += [f"  {a.get('filename') or '(unnamed)'}  {a.get('contentType')}  {human_bytes(a.get('size'))}" for a in attachments]
        text = message.get("text")
        if text:
            body = str(text).splitlines()
            lines += ["", "Text:"] + ["  " + line for line in body[:20]]
            if len(body) > 20:
                lines.append(f"  … {len(body) - 20} more lines (queue show --raw)")
    return lines


def attempt_counts(e: dict) -> tuple[int, int]:
    """(attempts since the last retry, attempts in total) of one message.

    ``attempts`` starts again at 0 when a message is retried by hand (a fresh budget for
    the retry policy); the history keeps every attempt, one entry per domain tried, all
    entries of one attempt with the same time. The total is the larger of the two counts
    (the history keeps only the latest entries)."""
    since = int(e.get("attempts") or 0)
    runs = {str(h.get("at")) for h in e.get("history") or [] if isinstance(h, dict) and h.get("at")}
    return since, max(since, len(runs))


def attempts_text(e: dict) -> str:
    """``2``, or ``1 since the last retry (3 in total)`` once a retry reset the count."""
    since, total = attempt_counts(e)
    return f"{since} since the last retry ({total} in total)" if total > since else str(since)


def _reply_text(reply: Any) -> str:
    if isinstance(reply, dict):
        parts = [str(reply.get(k)) for k in ("code", "enhanced_code", "text", "message", "response") if reply.get(k)]
        return " ".join(parts)
    return "" if reply is None else str(reply)


def queue_retry(ctx: Context) -> int:
    answer = ctx.api().post(f"/api/emails/{path_id(ctx.args.id)}/retry")
    ctx.out(f"{ctx.args.id}: {answer.get('result', 'queued')}" + (f" — {answer['message']}" if answer.get("message") else ""))
    return OK


def queue_delete(ctx: Context) -> int:
    answer = ctx.api().delete(f"/api/emails/{path_id(ctx.args.id)}")
    ctx.out(f"{ctx.args.id}: {answer.get('result', 'deleted')}" + (f" — {answer['message']}" if answer.get("message") else ""))
    return OK


HANDLERS: dict[tuple[str, str], Callable[[Context], int]] = {
    ("mailbox", "add"): mailbox_add,
    ("mailbox", "list"): mailbox_list,
    ("mailbox", "delete"): mailbox_delete,
    ("mailbox", "passwd"): mailbox_passwd,
    ("queue", "list"): queue_list,
    ("queue", "show"): queue_show,
    ("queue", "retry"): queue_retry,
    ("queue", "delete"): queue_delete,
}


def main(argv: Optional[list[str]] = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout, stderr: TextIO = sys.stderr) -> int:
    """Run one CLI command; returns the exit code (argparse exits 2 itself on bad usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as done:  # --help or a usage error: argparse has written its text
        try:
            stdout.flush()
        except BrokenPipeError:
            silence_stdout(stdout)
            return SIGPIPE_EXIT
        raise done
    if args.command in (None, "serve"):
        parser.error("the server is started by __main__ (python -m mailappliance [serve])")
    ctx = Context(args, stdin, stdout, stderr)
    try:
        code = HANDLERS[(args.command, args.action)](ctx)
        stdout.flush()  # a closed pipe shows here, not in the flush at exit
        return code
    except BrokenPipeError:
        silence_stdout(stdout)
        return SIGPIPE_EXIT
    except (UsageError, NoPassword, ConfigError) as exc:
        print(f"mailappliance: {exc}", file=stderr)
        return USAGE
    except ApiRefused as exc:
        print(f"mailappliance: {exc}", file=stderr)
        return REFUSED
    except Unreachable as exc:
        print(f"mailappliance: {exc}", file=stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        print("", file=stderr)
        return INTERRUPTED_EXIT
