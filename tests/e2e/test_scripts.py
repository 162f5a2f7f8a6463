"""``scripts/test-send``, ``test-ip``, ``test-ports``, ``test-lmtp`` as processes against a live appliance."""
import json
import os
import re
import subprocess

import pytest
from bson import ObjectId

from tests.conftest import PASSWORD, free_port
from tests.e2e.cli_helpers import ROOT, run_script, tool_env
from tests.e2e.helpers import stored_messages
from tests.e2e.outbound_peers import HttpRecorder

SCRIPTS = ["test-send", "test-ip", "test-ports", "test-lmtp"]
LISTENERS = ["smtp", "submission", "smtps", "lmtp", "lmtps", "imap", "imaps", "api", "mailbox-api"]


def rows(output: str) -> dict[tuple[str, str], tuple[str, str, str]]:
    """test-ports table -> {(listener, mode): (port, result, detail)}."""
    table = {}
    for line in output.splitlines()[2:]:
        name, port, mode, result, *detail = line.split(None, 4)
        table[(name, mode)] = (port, result, detail[0] if detail else "")
    return table


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(appliance, script):
    out = run_script(appliance, script, "--help")
    assert out.returncode == 0 and out.stdout.startswith(f"usage: scripts/{script}"), out.stderr


def test_ports_every_listener_with_and_without_tls(appliance):
    out = run_script(appliance, "test-ports")
    assert out.returncode == 0, out.stdout + out.stderr
    table = rows(out.stdout)
    ports = appliance.ports
    expected = {
        ("smtp", "plain"), ("smtp", "starttls"), ("submission", "plain"), ("submission", "starttls"), ("smtps", "tls"),
        ("lmtp", "plain"), ("lmtp", "starttls"), ("lmtps", "tls"), ("imap", "plain"), ("imap", "starttls"), ("imaps", "tls"),
        ("api", "http"), ("mailbox-api", "http"),
    }
    assert set(table) == expected
    for (name, mode), (port, result, detail) in table.items():
        assert (port, result) == (str(ports[name]), "OK"), (name, mode, detail)
    assert table[("smtp", "plain")][2].startswith("220 mx.test.example") and "STARTTLS" in table[("smtp", "plain")][2]
    assert table[("submission", "starttls")][2].startswith("TLSv1.") and "AUTH PLAIN LOGIN" in table[("submission", "starttls")][2]
    assert "LOGINDISABLED gone" in table[("imap", "starttls")][2]
    assert table[("api", "http")][2] == "GET /health 200 ok (database reachable)"
    assert set(LISTENERS) == {name for name, _ in table}


def test_ports_off_is_not_a_failure_and_a_dead_port_is(appliance_factory):
    app = appliance_factory(smtps_port=0, lmtp_ssl_enabled=False)
    out = run_script(app, "test-ports")
    assert out.returncode == 0, out.stdout + out.stderr
    table = rows(out.stdout)
    assert table[("smtps", "-")][:2] == ("-", "off") and table[("lmtps", "-")][:2] == ("-", "off")
    dead = free_port()
    out = run_script(app, "test-ports", "--port", f"imap={dead}")
    assert out.returncode == 1
    table = rows(out.stdout)
    assert table[("imap", "plain")] == (str(dead), "FAIL", "connection refused")
    assert table[("imaps", "tls")][1] == "OK"
    assert out.stderr.strip() == f"test-ports: 2 probe(s) failed: imap:{dead}"
    verified = rows(run_script(app, "test-ports", "--verify").stdout)
    assert verified[("imaps", "tls")][1:] == ("FAIL", "TLS: CERTIFICATE_VERIFY_FAILED"), "--verify refuses the self-signed certificate"
    assert verified[("smtp", "plain")][1] == "OK"
    as_json = json.loads(run_script(app, "test-ports", "--json").stdout)
    assert {(c["listener"], c["result"]) for c in as_json if c["result"] != "OK"} == {("smtps", "off"), ("lmtps", "off")}


def test_send_to_the_port_25_role_and_confirm_arrival(appliance, mailbox):
    out = run_script(appliance, "test-send", "--to", mailbox)
    assert out.returncode == 0, out.stdout + out.stderr
    queue_id = re.search(r"^queue id: ([0-9a-f]{24})$", out.stdout, re.M).group(1)
    assert f"via mx (127.0.0.1:{appliance.ports['smtp']})" in out.stdout
    assert "arrived: status stored, local ['user@example.com']" in out.stdout
    record = appliance.stores.collections.incoming.find_one({"_id": ObjectId(queue_id)})
    assert record["role"] == "mx" and record["tls"] is True
    [message] = stored_messages(appliance, mailbox)
    assert message["envelope"]["subject"].startswith("mailappliance test ")


def test_send_with_submission_auth_and_imap_check(appliance, mailbox):
    out = run_script(appliance, "test-send", "--user", mailbox, "--to", mailbox, "--password-stdin", "--imap", input=PASSWORD + "\n")
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"via submission (127.0.0.1:{appliance.ports['submission']})" in out.stdout
    assert "AUTH as user@example.com: accepted" in out.stdout
    assert re.search(r"IMAP: found in user@example.com's INBOX as UID 1$", out.stdout, re.M)
    queue_id = re.search(r"^queue id: ([0-9a-f]{24})$", out.stdout, re.M).group(1)
    record = appliance.stores.collections.incoming.find_one({"_id": ObjectId(queue_id)})
    assert (record["role"], record["authenticated_as"]) == ("submission", mailbox)

    smtps = run_script(appliance, "test-send", "--via", "smtps", "--user", mailbox, "--to", mailbox, "--password-stdin", input=PASSWORD + "\n")
    assert smtps.returncode == 0 and "session: TLSv1." in smtps.stdout, smtps.stdout + smtps.stderr

    wrong = run_script(appliance, "test-send", "--user", mailbox, "--to", mailbox, "--password-stdin", input="wrong password\n")
    assert wrong.returncode == 1
    assert wrong.stderr.startswith(f"test-send: FAIL: SMTP on 127.0.0.1:{appliance.ports['submission']}: 535 ")
    unknown = run_script(appliance, "test-send", "--to", "nobody@example.com")
    assert unknown.returncode == 1 and "RCPT TO:<nobody@example.com> refused: 550" in unknown.stderr

    # No terminal to ask for the password on (cron, ssh host cmd): one line, exit 2, nothing sent.
    no_tty = run_script(appliance, "test-send", "--user", mailbox, "--to", mailbox, "--imap")
    assert (no_tty.returncode, no_tty.stdout) == (2, "")
    assert no_tty.stderr == "test-send: standard input is not a terminal, so the password cannot be asked for: use --password-stdin\n"
    empty = run_script(appliance, "test-send", "--user", mailbox, "--to", mailbox, "--password-stdin", input="")
    assert (empty.returncode, empty.stderr) == (2, "test-send: --password-stdin: expected --user's password on standard input\n")


def test_ip_selection_disabled_and_through_an_api(appliance_factory):
    app = appliance_factory()
    out = run_script(app, "test-ip")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "selected: the default route (source: disabled)" in out.stdout
    for step in ("GET /api/ip-selection/stats:", "POST /api/ip-selection/test (from test@example.com to someone@example.org):",
                 "POST /api/ip-selection/clear-cache:"):
        assert step in out.stdout

    api = HttpRecorder(lambda request: (200, json.dumps({"ip": "127.0.0.1"}).encode()))
    try:
        app = appliance_factory(ip_selection_enabled=True, ip_selection_api_url=api.url, ip_selection_timeout=2.0, ip_selection_retries=0)
        out = run_script(app, "test-ip", "--from", "user@example.com", "--to", "a@accept.test", "--to", "b@accept.test")
        assert out.returncode == 0, out.stdout + out.stderr
        assert "selected: 127.0.0.1 (source: api)" in out.stdout
        assert api.requests[0]["json"] == {"emailId": "test-ip", "from": "user@example.com", "to": ["a@accept.test", "b@accept.test"], "domain": "accept.test"}
    finally:
        api.stop()

    wrong_key = run_script(app, "test-ip", "--api-key", "nope-nope-nope-nope")
    assert wrong_key.returncode == 1 and "401" in wrong_key.stderr


def test_lmtp_replies_per_recipient_and_the_unknown_550(appliance):
    for address in ("a@example.com", "b@example.com"):
        appliance.admin.create(address, PASSWORD)
    out = run_script(appliance, "test-lmtp", "--to", "a@example.com", "--to", "b@example.com", "--unknown", "ghost@example.com")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "session: TLSv1." in out.stdout, "STARTTLS is used when offered"
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if "@" in line.split()[0]}
    assert re.search(r"250 2\.1\.5 .*250 2\.0\.0 <a@example\.com> Ok: delivered as [0-9a-f]{24}$", lines["a@example.com"])
    assert re.search(r"250 2\.0\.0 <b@example\.com> Ok: delivered as [0-9a-f]{24}$", lines["b@example.com"])
    assert re.search(r"ghost@example\.com \(unknown\)\s+550 5\.1\.1 .*-$", lines["ghost@example.com"])
    assert len(stored_messages(appliance, "a@example.com")) == len(stored_messages(appliance, "b@example.com")) == 1

    implicit = run_script(appliance, "test-lmtp", "--tls", "--to", "a@example.com")
    assert implicit.returncode == 0 and f"LMTP at 127.0.0.1:{appliance.ports['lmtps']}" in implicit.stdout, implicit.stderr
    assert len(stored_messages(appliance, "a@example.com")) == 2

    missing = run_script(appliance, "test-lmtp", "--to", "ghost@example.com", "--no-unknown")
    assert missing.returncode == 1 and missing.stderr.strip() == "test-lmtp: FAIL: not delivered as expected: ghost@example.com"


def test_nothing_listening(appliance, tmp_path):
    port = free_port()
    stale = tmp_path / "stale"
    stale.mkdir()
    (stale / "ports.json").write_text(json.dumps({"pid": 1, **{name: port for name in LISTENERS}}))
    env = tool_env(appliance, DATA_DIR=str(stale))
    ip = run_script(appliance, "test-ip", env=env)
    assert ip.returncode == 3 and ip.stderr.strip() == f"test-ip: cannot reach the appliance at http://127.0.0.1:{port} (connection refused)"
    lmtp = run_script(appliance, "test-lmtp", "--to", "a@example.com", env=env)
    assert lmtp.returncode == 3 and f"cannot reach LMTP at 127.0.0.1:{port}" in lmtp.stderr
    send = run_script(appliance, "test-send", "--to", "a@example.com", env=env)
    assert send.returncode == 3 and f"cannot reach SMTP at 127.0.0.1:{port}" in send.stderr
    ports = run_script(appliance, "test-ports", env=env)
    assert ports.returncode == 1 and all(r[1] == "FAIL" for r in rows(ports.stdout).values())


def test_output_closed_early_ends_quietly_with_141(appliance):
    """``scripts/test-ports | head -1`` with head gone before the first line: no traceback, exit 141."""
    read, write = os.pipe()
    os.close(read)
    try:
        out = subprocess.run([str(ROOT / "scripts" / "test-ports")], stdin=subprocess.DEVNULL, stdout=write, stderr=subprocess.PIPE,
                             env=tool_env(appliance), cwd=appliance.settings.data_dir.parent, timeout=90)
    finally:
        os.close(write)
    assert (out.returncode, out.stderr.decode()) == (141, "")
