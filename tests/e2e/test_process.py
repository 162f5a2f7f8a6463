"""``python -m mailappliance`` as a process: start-up, the embedded database, graceful shutdown."""
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pymongo
import pytest

from tests.conftest import PASSWORD
from tests.e2e.helpers import MAIL_LISTENERS_AUTO, RawClient, wait_for

ROOT = Path(__file__).resolve().parents[2]
KEY = "process-test-key-0123456789"


def start(tmp_path: Path, **env_overrides) -> tuple[subprocess.Popen, dict]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "LMTP_", "IMAP_", "MONGODB_"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        DOTENV_PATH=str(tmp_path / "no.env"),
        **MAIL_LISTENERS_AUTO,
        API_PORT="auto",
        MAILBOX_API_PORT="auto",
        MAILBOX_API_KEY=KEY,
        ALLOWED_DOMAINS="example.com",
        LOG_LEVEL="info",
        PYTHONPATH=str(ROOT),
    )
    env.update(env_overrides)
    process = subprocess.Popen(
        [sys.executable, "-m", "mailappliance"], env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    ports_file = tmp_path / "data" / "ports.json"

    def ready():
        if process.poll() is not None:
            raise AssertionError(f"appliance exited: {process.stderr.read().decode()}")
        return ports_file.exists() and json.loads(ports_file.read_text())

    ports = wait_for(ready, timeout=60)
    return process, ports


def create_mailbox(ports, address="user@example.com"):
    request = urllib.request.Request(
        f"http://127.0.0.1:{ports['mailbox-api']}/api/mailboxes",
        data=json.dumps({"username": address, "password": PASSWORD}).encode(),
        headers={"content-type": "application/json", "x-api-key": KEY},
        method="POST",
    )
    assert urllib.request.urlopen(request).status == 201


def stop(process, timeout=30):
    process.send_signal(signal.SIGTERM)
    process.wait(timeout)
    return process.returncode, process.stderr.read().decode()


def test_unreachable_database_is_one_line_not_a_traceback(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mailappliance"],
        env={**os.environ, "MONGODB_URL": "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=500", "DATA_DIR": str(tmp_path), "PYTHONPATH": str(ROOT), "DOTENV_PATH": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("mailappliance: cannot start: cannot use MongoDB at mongodb://127.0.0.1:1/x")


def test_bad_setting_is_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "mailappliance"],
        env={**os.environ, "SMTP_25_PORT": "twenty-five", "PYTHONPATH": str(ROOT), "DOTENV_PATH": str(tmp_path / "none")},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert out.stderr.strip() == "mailappliance: bad setting: SMTP_25_PORT must be a port number, not 'twenty-five'"


def test_embedded_database_lifecycle_and_generated_key(tmp_path):
    process, ports = start(tmp_path, MAILBOX_API_KEY="changeme")
    try:
        key_file = tmp_path / "data" / "api-key"
        key = key_file.read_text().strip()
        assert len(key) >= 32 and key != "changeme"
        assert oct(key_file.stat().st_mode & 0o777) == "0o600"
        health = json.load(urllib.request.urlopen(f"http://127.0.0.1:{ports['api']}/health"))
        assert health["status"] == "ok"
        # A second appliance on the same data directory refuses with one line.
        second = subprocess.run(
            [sys.executable, "-m", "mailappliance"],
            env={**os.environ, "DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(ROOT), "SMTP_25_PORT": "auto", "DOTENV_PATH": str(tmp_path / "none")},
            capture_output=True,
            text=True,
            timeout=90,
        )
        assert second.returncode == 1 and "Traceback" not in second.stderr
        assert "in use by another running appliance" in second.stderr
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    assert "embedded database stopped" in stderr
    assert not (tmp_path / "data" / "ports.json").exists()
    assert (tmp_path / "data" / "db").is_dir()


def test_shutdown_lets_a_transaction_in_progress_finish(tmp_path, db_url):
    process, ports = start(tmp_path, MONGODB_URL=db_url, SHUTDOWN_TIMEOUT="20")
    create_mailbox(ports)
    busy = RawClient(ports["smtp"])
    idle = RawClient(ports["smtp"])
    busy.reply(), idle.reply()
    idle.cmd("EHLO idle.example")
    busy.cmd("EHLO busy.example")
    busy.cmd("MAIL FROM:<a@remote.example>")
    busy.cmd("RCPT TO:<user@example.com>")
    assert busy.cmd("DATA")[0] == 354
    busy.send(b"Subject: in flight\r\n\r\nfirst half\r\n")
    process.send_signal(signal.SIGTERM)
    assert idle.reply()[0] == 421, "an idle client is told the server is going away"
    time.sleep(0.5)
    with pytest.raises(OSError):
        RawClient(ports["smtp"], timeout=2).reply()
    busy.send(b"second half\r\n.\r\n")
    assert busy.reply()[0] == 250
    assert busy.reply()[0] == 421, "then told the server is going away"
    assert busy.closed(10)
    process.wait(30)
    assert process.returncode == 0, process.stderr.read().decode()
    client = pymongo.MongoClient(db_url)
    [message] = list(client.get_default_database().messages.find())
    assert message["subject"] == "in flight"
    client.close()


def test_shutdown_does_not_wait_forever_and_stores_no_half_message(tmp_path, db_url):
    process, ports = start(tmp_path, MONGODB_URL=db_url, SHUTDOWN_TIMEOUT="1")
    create_mailbox(ports)
    stuck = RawClient(ports["smtp"])
    stuck.reply()
    stuck.cmd("EHLO stuck.example")
    stuck.cmd("MAIL FROM:<a@remote.example>")
    stuck.cmd("RCPT TO:<user@example.com>")
    stuck.cmd("DATA")
    stuck.send(b"Subject: never finished\r\n\r\n")
    started = time.monotonic()
    code, stderr = stop(process)
    assert code == 0, stderr
    assert time.monotonic() - started < 15
    assert "still busy" in stderr
    client = pymongo.MongoClient(db_url)
    assert client.get_default_database().messages.count_documents({}) == 0
    client.close()


def test_sigkill_keeps_every_acknowledged_message_and_frees_the_database(tmp_path):
    import smtplib

    process, ports = start(tmp_path, MAILBOX_API_KEY=KEY)
    create_mailbox(ports)
    database = [int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()]
    assert database, "the embedded database runs as a child process"
    with smtplib.SMTP("127.0.0.1", ports["smtp"]) as client:
        for i in range(50):
            client.sendmail("a@remote.example", ["user@example.com"], f"Subject: k{i}\r\n\r\nx\r\n".encode())
    process.kill()  # SIGKILL right after the last 250
    process.wait(10)

    def database_gone():
        return all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2] for pid in database)

    wait_for(database_gone, timeout=30)
    (tmp_path / "data" / "ports.json").unlink()
    process, ports = start(tmp_path, MAILBOX_API_KEY=KEY)
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['api']}/api/incoming-emails?limit=1&source=smtp", headers={"x-api-key": KEY}
        )
        assert json.load(urllib.request.urlopen(request))["total"] == 50
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr


def test_embedded_database_killed_under_load_is_restarted_and_nothing_acknowledged_is_lost(tmp_path):
    import smtplib

    process, ports = start(tmp_path, MAILBOX_API_KEY=KEY)
    try:
        create_mailbox(ports)
        [database] = [int(p) for p in subprocess.run(["pgrep", "-P", str(process.pid)], capture_output=True, text=True).stdout.split()]
        acknowledged, deferred = 0, 0
        with smtplib.SMTP("127.0.0.1", ports["smtp"]) as client:
            for i in range(60):
                if i == 20:
                    os.kill(database, signal.SIGKILL)  # the supervisor must bring it back
                try:
                    client.sendmail("a@remote.example", ["user@example.com"], f"Subject: d{i}\r\n\r\nx\r\n".encode())
                    acknowledged += 1
                except (smtplib.SMTPDataError, smtplib.SMTPRecipientsRefused) as exc:
                    assert str(exc).count("4.3.0"), f"only temporary failures while it restarts: {exc}"
                    deferred += 1
                    time.sleep(0.5)
        assert acknowledged >= 40, (acknowledged, deferred)
        request = urllib.request.Request(
            f"http://127.0.0.1:{ports['api']}/api/incoming-emails?limit=1&source=smtp", headers={"x-api-key": KEY}
        )
        assert json.load(urllib.request.urlopen(request))["total"] == acknowledged
    finally:
        code, stderr = stop(process)
    assert code == 0, stderr
    assert "restarting" in stderr
