"""``python -m mailappliance mailbox|queue ...`` as a process against a live appliance."""
import json
import os
import pty
import re
import select
import signal
import smtplib
import subprocess
import sys
import time

import pytest

from tests.conftest import free_port, have
from tests.e2e.cli_helpers import imap_login, run_cli, tool_env
from tests.e2e.helpers import wait_for
from tests.e2e.outbound_peers import PEER_ACCEPT, SENDER, Dnsmasq, SmtpPeer, outbound_appliance, shared_port

PASSWORD = "first password 1"
NEW_PASSWORD = "second password 2"
COMMANDS = [
    [], ["serve"], ["mailbox"], ["mailbox", "add"], ["mailbox", "list"], ["mailbox", "delete"], ["mailbox", "passwd"],
    ["queue"], ["queue", "list"], ["queue", "show"], ["queue", "retry"], ["queue", "delete"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "top")
def test_help_everywhere(appliance, command):
    out = run_cli(appliance, *command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: python -m mailappliance")


def test_mailbox_add_list_passwd_delete(appliance):
    added = run_cli(appliance, "mailbox", "add", "Alice@Example.com", "--password-stdin", input=PASSWORD + "\n")
    assert (added.returncode, added.stdout.strip()) == (0, "created alice@example.com (quota: unlimited)"), added.stderr
    assert imap_login(appliance, "alice@example.com", PASSWORD)

    quota = run_cli(appliance, "mailbox", "add", "bob@example.com", "--quota", "1048576", "--password-stdin", "--json", input=PASSWORD + "\n")
    assert quota.returncode == 0 and json.loads(quota.stdout)["quota"] == 1048576

    listed = run_cli(appliance, "mailbox", "list")
    assert listed.returncode == 0
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ADDRESS", "USED", "QUOTA", "CREATED"]
    assert lines[1].split()[:4] == ["alice@example.com", "0", "B", "unlimited"]
    assert lines[2].split()[:4] == ["bob@example.com", "0", "B", "1.0"]
    assert lines[-1] == "2 mailboxes"
    as_json = json.loads(run_cli(appliance, "mailbox", "list", "--json").stdout)
    assert as_json["total"] == 2 and [m["username"] for m in as_json["mailboxes"]] == ["alice@example.com", "bob@example.com"]

    changed = run_cli(appliance, "mailbox", "passwd", "alice@example.com", "--password-stdin", input=f"{PASSWORD}\n{NEW_PASSWORD}\n")
    assert (changed.returncode, changed.stdout.strip()) == (0, "alice@example.com: password changed"), changed.stderr
    assert imap_login(appliance, "alice@example.com", NEW_PASSWORD)
    assert not imap_login(appliance, "alice@example.com", PASSWORD)

    refused = run_cli(appliance, "mailbox", "passwd", "alice@example.com", "--password-stdin", input=f"{PASSWORD}\nthird password 3\n")
    assert refused.returncode == 1
    assert refused.stderr.strip() == "mailappliance: POST /api/mailboxes/alice@example.com/change-password: 403 oldPassword is wrong"

    unconfirmed = run_cli(appliance, "mailbox", "delete", "alice@example.com")
    assert unconfirmed.returncode == 2 and "--yes" in unconfirmed.stderr
    deleted = run_cli(appliance, "mailbox", "delete", "alice@example.com", "--yes")
    assert (deleted.returncode, deleted.stdout.strip()) == (0, "mailbox alice@example.com deleted"), deleted.stderr
    assert not imap_login(appliance, "alice@example.com", NEW_PASSWORD)
    after = json.loads(run_cli(appliance, "mailbox", "list", "--json").stdout)
    assert [m["username"] for m in after["mailboxes"]] == ["bob@example.com"]
    again = run_cli(appliance, "mailbox", "delete", "alice@example.com", "--yes")
    assert again.returncode == 1 and "404 no mailbox alice@example.com" in again.stderr


def test_api_refusals_exit_1_with_the_message(appliance):
    first = run_cli(appliance, "mailbox", "add", "carol@example.com", "--password-stdin", input=PASSWORD + "\n")
    assert first.returncode == 0
    duplicate = run_cli(appliance, "mailbox", "add", "carol@example.com", "--password-stdin", input=PASSWORD + "\n")
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip() == "mailappliance: POST /api/mailboxes: 409 mailbox carol@example.com already exists"
    short = run_cli(appliance, "mailbox", "add", "dave@example.com", "--password-stdin", input="short\n")
    assert short.returncode == 1 and ": 400 " in short.stderr
    foreign = run_cli(appliance, "mailbox", "add", "erin@elsewhere.example", "--password-stdin", input=PASSWORD + "\n")
    assert foreign.returncode == 1 and "not in ALLOWED_DOMAINS" in foreign.stderr
    no_password = run_cli(appliance, "mailbox", "add", "dave@example.com", "--password-stdin", input="")
    assert no_password.returncode == 2 and "expected 1 line" in no_password.stderr


def test_wrong_key_exits_1(appliance):
    out = run_cli(appliance, "mailbox", "list", "--api-key", "not-the-key-0123456789")
    assert out.returncode == 1
    assert out.stderr.startswith("mailappliance: GET /api/mailboxes: 401 wrong API key (set MAILBOX_API_KEY or pass --api-key")
    assert out.stderr.lower().count("wrong") == 1, "said once"
    env = tool_env(appliance, MAILBOX_API_KEY="also-not-the-key-0123456789")
    assert run_cli(appliance, "mailbox", "list", env=env).returncode == 1


def test_nothing_listening_exits_3_and_says_where(appliance, tmp_path):
    port = free_port()
    out = run_cli(appliance, "mailbox", "list", "--mailbox-api-url", f"http://127.0.0.1:{port}")
    assert out.returncode == 3
    assert out.stderr.strip() == f"mailappliance: cannot reach the appliance at http://127.0.0.1:{port} (connection refused)"
    # A stale ports.json (the appliance is gone) points at ports nobody listens on.
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "ports.json").write_text(json.dumps({"pid": 1, "api": port, "mailbox-api": port}))
    env = tool_env(appliance, DATA_DIR=str(stale))
    for command in (["mailbox", "list"], ["queue", "list"]):
        gone = run_cli(appliance, *command, env=env)
        assert gone.returncode == 3 and f"http://127.0.0.1:{port}" in gone.stderr, gone.stderr


def test_key_from_dotenv_and_from_the_generated_key_file(appliance_factory, tmp_path):
    app = appliance_factory(mailbox_api_key="changeme")
    assert app.api_key_path is not None
    generated = tool_env(app, MAILBOX_API_KEY=None)  # the key file DATA_DIR/api-key
    out = run_cli(app, "mailbox", "list", env=generated)
    assert (out.returncode, out.stdout.strip()) == (0, "ADDRESS  USED  QUOTA  CREATED\n0 mailboxes"), out.stderr
    dotenv = tmp_path / "operator.env"
    dotenv.write_text(f"MAILBOX_API_KEY={app.api_key}\n")
    out = run_cli(app, "mailbox", "list", env=tool_env(app, MAILBOX_API_KEY=None, DATA_DIR=str(tmp_path / "empty"), DOTENV_PATH=str(dotenv),
                                                       MAILBOX_API_URL=f"http://127.0.0.1:{app.ports['mailbox-api']}"))
    assert out.returncode == 0, out.stderr
    dotenv.write_text("MAILBOX_API_KEY=wrong-key-from-dotenv-0123\n")
    out = run_cli(app, "mailbox", "list", env=tool_env(app, MAILBOX_API_KEY=None, DOTENV_PATH=str(dotenv)))
    assert out.returncode == 1, "the .env key is used before DATA_DIR/api-key"


def test_usage_errors_exit_2(appliance):
    assert run_cli(appliance, "mailbox").returncode == 2
    assert run_cli(appliance, "queue", "list", "--limit", "0").returncode == 2
    assert run_cli(appliance, "queue", "list", "--status", "lost").returncode == 2
    assert run_cli(appliance, "mailbox", "add", "x@example.com", "--quota", "-1", "--password-stdin", input=PASSWORD + "\n").returncode == 2
    no_key = run_cli(appliance, "mailbox", "list", env=tool_env(appliance, MAILBOX_API_KEY=None))
    assert no_key.returncode == 2 and "no API key" in no_key.stderr


# ---------------------------------------------------------------------------- queue
@pytest.fixture(scope="module")
def dns():
    if not have("dnsmasq"):
        pytest.skip("dnsmasq (dnsmasq-base) is not installed")
    server = Dnsmasq()
    yield server
    server.stop()


@pytest.fixture
def delivered(appliance_factory, dns):
    """An appliance that has delivered one message, bounced one and deferred one (for an hour)
    through real MX lookups to a real SMTP peer: {"sent": doc, "bounced": doc, "deferred": doc}."""
    peer = SmtpPeer([PEER_ACCEPT], shared_port([PEER_ACCEPT]))
    app = outbound_appliance(appliance_factory, dns.servers, peer.port, queue_retry_base=3600.0, queue_max_attempts=0)
    docs = {}
    for status, rcpt in (("sent", "ok@accept.test"), ("bounced", "nouser@accept.test"), ("deferred", "defer@accept.test")):
        subject = f"cli {status}"
        message = f"From: <{SENDER}>\r\nTo: <{rcpt}>\r\nSubject: {subject}\r\n\r\nBody of {status}.\r\n"
        with smtplib.SMTP("127.0.0.1", app.ports["smtp"]) as client:
            client.sendmail(SENDER, [rcpt], message.encode())
        docs[status] = wait_for(lambda: app.stores.collections.outgoing.find_one({"subject": subject, "status": status}), timeout=20)
    yield app, docs
    peer.stop()


def test_queue_list_show_retry_delete(delivered):
    app, docs = delivered
    ids = {status: str(doc["_id"]) for status, doc in docs.items()}
    listed = run_cli(app, "queue", "list")
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "ATTEMPTS", "FROM", "TO", "SUBJECT", "NEXT", "ATTEMPT", "(UTC)"]
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    assert rows[ids["deferred"]][:7] == [ids["deferred"], "deferred", "1", SENDER, "defer@accept.test", "cli", "deferred"]
    assert rows[ids["bounced"]][:7] == [ids["bounced"], "bounced", "1", SENDER, "nouser@accept.test", "cli", "bounced"]
    assert rows[ids["bounced"]][-1] == "-" and rows[ids["deferred"]][-1] != "-", "next attempt only while waiting"
    assert [line.split()[0] for line in lines[1:-1]] == [ids["deferred"], ids["bounced"], ids["sent"]], "newest first"
    assert lines[-1] == "3 of 3 (page 1 of 1)"
    bounced_only = json.loads(run_cli(app, "queue", "list", "--status", "bounced", "--json").stdout)
    assert [e["id"] for e in bounced_only["emails"]] == [ids["bounced"]] and bounced_only["total"] == 1
    assert run_cli(app, "queue", "list", "--recipient", "ok@accept", "--json").stdout.count('"id"') == 1

    shown = run_cli(app, "queue", "show", ids["bounced"])
    assert shown.returncode == 0, shown.stderr
    text = shown.stdout
    assert f"id:           {ids['bounced']}" in text and "status:       bounced\nattempts:     1\n" in text
    assert "next attempt:" not in text, "a bounced message waits for nothing"
    assert "next attempt:" in run_cli(app, "queue", "show", ids["deferred"]).stdout
    assert re.search(r"nouser@accept\.test\s+bounced\s+1\s+550\s+.*no such user", text)
    assert "Delivery history (1 entry):" in text and "mx.accept.test" in text
    assert "Text:\n  Body of bounced." in text
    detail = json.loads(run_cli(app, "queue", "show", ids["bounced"], "--json").stdout)
    assert detail["bounced"][0]["bounce_type"] == "hard" and len(detail["history"]) == 1
    raw = subprocess_bytes(app, "queue", "show", ids["sent"], "--raw")
    assert b"Subject: cli sent\r\n" in raw and raw.endswith(b"Body of sent.\r\n")

    retried = run_cli(app, "queue", "retry", ids["bounced"])
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.startswith(f"{ids['bounced']}: queued — ")
    # A fresh budget of attempts; the history keeps the first one.
    again = wait_for(lambda: app.stores.collections.outgoing.find_one({"_id": docs["bounced"]["_id"], "status": "bounced", "history.1": {"$exists": True}}), timeout=20)
    assert (again["attempts"], again["recipients"][0]["code"]) == (1, 550), "delivered (and refused) once more"
    after_retry = run_cli(app, "queue", "show", ids["bounced"]).stdout
    assert "attempts:     1 since the last retry (2 in total)\n" in after_retry and "Delivery history (2 entries):" in after_retry
    nothing = run_cli(app, "queue", "retry", ids["sent"])
    assert nothing.returncode == 1
    assert nothing.stderr.strip() == f"mailappliance: POST /api/emails/{ids['sent']}/retry: 409 every recipient was delivered; nothing to retry"

    deleted = run_cli(app, "queue", "delete", ids["deferred"])
    assert (deleted.returncode, deleted.stdout.split(" — ")[0]) == (0, f"{ids['deferred']}: deleted"), deleted.stderr
    assert app.stores.collections.outgoing.find_one({"_id": docs["deferred"]["_id"]}) is None
    gone = run_cli(app, "queue", "show", ids["deferred"])
    assert gone.returncode == 1 and gone.stderr.strip() == f"mailappliance: GET /api/emails/{ids['deferred']}: 404 no queued email {ids['deferred']}"
    assert run_cli(app, "queue", "delete", ids["deferred"]).returncode == 1
    assert run_cli(app, "queue", "show", "not-an-id").returncode == 1


def test_queue_with_the_mailbox_api_off_uses_api_port(appliance_factory):
    app = appliance_factory(mailbox_api_port=0)
    added = run_cli(app, "mailbox", "add", "zoe@example.com", "--password-stdin", input=PASSWORD + "\n")
    assert added.returncode == 0, added.stderr
    empty = run_cli(app, "queue", "list")
    assert (empty.returncode, empty.stdout.splitlines()[-1]) == (0, "0 of 0 (page 1 of 1)")


def subprocess_bytes(app, *args: str) -> bytes:
    out = subprocess.run([sys.executable, "-m", "mailappliance", *args], env=tool_env(app), capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ---------------------------------------------------------------------------- terminal
def test_no_terminal_for_a_password_says_use_password_stdin(appliance):
    for command in (["mailbox", "add", "nobody@example.com"], ["mailbox", "passwd", "nobody@example.com"]):
        out = run_cli(appliance, *command)  # standard input is an empty pipe
        assert out.returncode == 2, out.stderr
        assert out.stderr == "mailappliance: standard input is not a terminal, so the password cannot be asked for: use --password-stdin\n"


def _on_a_terminal(app, *args: str, keys: bytes = b"", signal_number: int = 0) -> tuple[int, str]:
    """Run the CLI with a pseudo-terminal as standard input (and no controlling terminal, so
    getpass uses that one); wait for the prompt, then type ``keys`` or send a signal."""
    master, slave = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "mailappliance", *args], stdin=slave, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env=tool_env(app), start_new_session=True)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    try:
        while b"password" not in seen.lower() and time.monotonic() < deadline:
            ready, _, _ = select.select([master, process.stderr], [], [], 0.2)
            for fd in ready:
                seen += os.read(fd if isinstance(fd, int) else fd.fileno(), 1024)
        assert b"password" in seen.lower(), seen
        if keys:
            os.write(master, keys)
        if signal_number:
            process.send_signal(signal_number)
        _, err = process.communicate(timeout=30)
    finally:
        os.close(master)
        if process.poll() is None:
            process.kill()
    return process.returncode, err.decode()


def test_ctrl_c_and_ctrl_d_at_the_password_prompt(appliance):
    code, err = _on_a_terminal(appliance, "mailbox", "add", "tty@example.com", signal_number=signal.SIGINT)
    assert code == 130 and "Traceback" not in err, err
    code, err = _on_a_terminal(appliance, "mailbox", "add", "tty@example.com", keys=b"\x04")  # Ctrl-D: end of input
    assert code == 2 and "Traceback" not in err and "no password given" in err, err


def test_output_closed_early_ends_quietly_with_141(appliance):
    """``mailbox list --json | head -1``: the reader is gone before the output is written."""
    for n in range(30):
        added = run_cli(appliance, "mailbox", "add", f"pipe{n:02}@example.com", "--password-stdin", input=PASSWORD + "\n")
        assert added.returncode == 0, added.stderr
    for command in (["mailbox", "list", "--json"], ["mailbox", "list"], ["--help"]):
        read, write = os.pipe()
        os.close(read)  # like head after its first line
        try:
            out = subprocess.run([sys.executable, "-m", "mailappliance", *command], stdin=subprocess.DEVNULL, stdout=write,
                                 stderr=subprocess.PIPE, env=tool_env(appliance), timeout=60)
        finally:
            os.close(write)
        expected = (0, 141) if command == ["--help"] else (141,)  # argparse itself ignores a failed write of its help
        assert out.returncode in expected and out.stderr.decode() == "", (command, out.returncode, out.stderr)
