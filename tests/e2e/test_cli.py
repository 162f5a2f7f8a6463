"""``python -m mailappliance mailbox|queue ...`` as a process against a live appliance."""
import json

import pytest

from tests.conftest import free_port
from tests.e2e.cli_helpers import imap_login, run_cli, tool_env

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
    assert out.stderr.startswith("mailappliance: GET /api/mailboxes: 401 ")
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
