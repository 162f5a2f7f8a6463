"""The HTTP apps under real gunicorn (gevent workers) next to a running appliance.

The appliance runs with its HTTP ports off (``API_PORT=0 MAILBOX_API_PORT=0``) and its
embedded database; two gunicorn masters serve ``mailappliance.wsgi:api_app`` and
``:mailbox_app`` on the same settings. A mailbox made through gunicorn logs in over
SMTP and IMAP on the appliance, the listener counters come from ``server_stats``, and
gunicorn's processes listen on their HTTP port and nothing else.
"""
from __future__ import annotations

import imaplib
import json
import os
import signal
import smtplib
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mailappliance.settings import Settings
from tests.conftest import PASSWORD, free_port
from tests.e2e.helpers import MAIL_LISTENERS_AUTO, wait_for

ROOT = Path(__file__).resolve().parents[2]
KEY = "gunicorn-test-key-0123456789"
GUNICORN = Path(sys.executable).parent / "gunicorn"
MAIL_LISTENERS = ("smtp", "submission", "smtps", "lmtp", "imap", "imaps")

pytestmark = pytest.mark.skipif(not GUNICORN.exists(), reason=f"gunicorn is not installed next to {sys.executable}")


def base_env(tmp_path: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "LMTP_", "IMAP_", "MONGODB_", "API_", "MAILBOX_", "GUNICORN"))}
    env.update(
        DATA_DIR=str(tmp_path / "data"),
        DOTENV_PATH=str(tmp_path / "no.env"),
        MAILBOX_API_KEY=KEY,
        ALLOWED_DOMAINS="example.com",
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="info",
    )
    return env


class Processes:
    """Every process this test starts, stopped (and waited for) at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.running: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, command: list[str], env: dict) -> subprocess.Popen:
        log = open(self.tmp_path / f"{name}.log", "wb")
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        log.close()
        self.running.append((name, process))
        return process

    def log(self, name: str) -> str:
        return (self.tmp_path / f"{name}.log").read_text(errors="replace")

    def stop_all(self) -> None:
        for _, process in reversed(self.running):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for _, process in reversed(self.running):
            try:
                process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def http(port: int, path: str, *, key: str | None = KEY, method: str = "GET", body: dict | None = None) -> tuple[int, dict]:
    headers = {"content-type": "application/json"}
    if key:
        headers["x-api-key"] = key
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=json.dumps(body).encode() if body is not None else None, headers=headers, method=method
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def listening_ports(pids: set[int]) -> set[int]:
    """TCP ports in LISTEN state whose sockets these processes hold (/proc, no psutil)."""
    inodes = set()
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def process_tree(pid: int) -> set[int]:
    """``pid`` and its children (gunicorn's master and workers)."""
    tree = {pid}
    for task in Path(f"/proc/{pid}/task").iterdir():
        children = (task / "children").read_text().split()
        for child in children:
            tree |= process_tree(int(child))
    return tree


@pytest.fixture
def deployment(tmp_path):
    processes = Processes(tmp_path)
    env = base_env(tmp_path)
    appliance_env = dict(
        env,
        **MAIL_LISTENERS_AUTO,
        API_PORT="0",
        MAILBOX_API_PORT="0",
    )
    try:
        appliance = processes.start("appliance", [sys.executable, "-m", "mailappliance"], appliance_env)
        ports_file = tmp_path / "data" / "ports.json"

        def ready():
            if appliance.poll() is not None:
                raise AssertionError("appliance exited:\n" + processes.log("appliance"))
            return ports_file.exists() and json.loads(ports_file.read_text())

        ports = wait_for(ready, timeout=90)
        gunicorn = {}
        for app in ("api_app", "mailbox_app"):
            port = free_port()
            master = processes.start(
                f"gunicorn-{app}",
                [str(GUNICORN), "-c", "config/gunicorn.conf.py", f"mailappliance.wsgi:{app}", "--bind", f"127.0.0.1:{port}", "--workers", "1"],
                env,
            )
            gunicorn[app] = (port, master)
        for app, (port, master) in gunicorn.items():

            def healthy(port=port, master=master, app=app):
                if master.poll() is not None:
                    raise AssertionError(f"gunicorn {app} exited:\n" + processes.log(f"gunicorn-{app}"))
                try:
                    return http(port, "/health", key=None)[0] == 200
                except OSError:
                    return False

            wait_for(healthy, timeout=60, interval=0.2)
        yield ports, gunicorn, appliance, processes
    finally:
        processes.stop_all()


def test_gunicorn_serves_both_apps_for_the_running_appliance(deployment, tmp_path):
    ports, gunicorn, appliance, processes = deployment
    api_port, api_master = gunicorn["api_app"]
    mailbox_port, mailbox_master = gunicorn["mailbox_app"]
    assert set(MAIL_LISTENERS) <= set(ports) and "api" not in ports and "mailbox-api" not in ports
    assert ports["database"].startswith("mongodb://127.0.0.1:")

    # Both apps answer, with the key enforced; the queue API runs on the shared database.
    assert http(api_port, "/health", key=None) == (200, {"status": "ok", "database": "reachable"})
    assert http(mailbox_port, "/health", key=None)[0] == 200
    assert http(api_port, "/api/queue/stats", key=None)[0] == 401
    status, stats = http(api_port, "/api/queue/stats")
    assert status == 200 and stats["queue"]["total"] == 0
    assert stats["runner"]["inFlight"] == 0  # a runner object, never started in gunicorn

    # A mailbox created through gunicorn's Mailbox API logs in on the appliance's listeners.
    status, created = http(mailbox_port, "/api/mailboxes", method="POST", body={"username": "user@example.com", "password": PASSWORD})
    assert status == 201, created
    assert http(mailbox_port, "/api/mailboxes/user@example.com")[0] == 200
    context = ssl.create_default_context(cafile=str(tmp_path / "data" / "tls" / "selfsigned-cert.pem"))
    context.check_hostname = False
    with smtplib.SMTP("127.0.0.1", ports["submission"], timeout=30) as smtp:
        smtp.starttls(context=context)
        assert smtp.login("user@example.com", PASSWORD)[0] == 235
        smtp.sendmail("user@example.com", ["user@example.com"], b"Subject: via gunicorn's mailbox\r\n\r\nhello\r\n")
    with imaplib.IMAP4_SSL("127.0.0.1", ports["imaps"], ssl_context=context, timeout=30) as imap:
        assert imap.login("user@example.com", PASSWORD)[0] == "OK"
        imap.select("INBOX")
        assert wait_for(lambda: imap.search(None, "ALL")[1][0].split(), timeout=20)
        # POST /api/send through a gunicorn worker's own writer: stored, and seen by the
        # appliance's IMAP session (its watch) and queued for the appliance's runner.
        status, sent = http(
            api_port, "/api/send", method="POST",
            body={"from": "app@example.com", "to": ["user@example.com", "someone@remote.example"], "subject": "via gunicorn", "text": "hi"},
        )
        assert status == 202 and sent["local"] == ["user@example.com"] and sent["queued"] == ["someone@remote.example"], sent
        assert wait_for(lambda: imap.search(None, "SUBJECT", '"via gunicorn"')[1][0].split(), timeout=20)
        status, queued = http(api_port, f"/api/emails/{sent['email_id']}")
        assert status == 200 and queued["to"] == ["someone@remote.example"]

    # gunicorn's processes hold their HTTP port and nothing else; the mail ports are the appliance's.
    mail_ports = {ports[name] for name in MAIL_LISTENERS}
    for port, master in (gunicorn["api_app"], gunicorn["mailbox_app"]):
        tree = process_tree(master.pid)
        assert len(tree) >= 2, "a master and its worker"
        assert listening_ports(tree) == {port}
    assert mail_ports <= listening_ports({appliance.pid})

    # The access log has the request, never the key.
    assert http(api_port, f"/api/queue/stats?api_key={KEY}", key=None)[0] == 200
    wait_for(lambda: "/api/queue/stats?api_key=***" in processes.log("gunicorn-api_app"), timeout=10)
    assert KEY not in processes.log("gunicorn-api_app")


def test_listener_stats_come_from_the_appliance_through_the_database(deployment, tmp_path):
    """What the API app built by ``mailappliance.wsgi`` reports as listeners: the appliance's
    ports and counters, published to ``server_stats`` every few seconds."""
    from mailappliance.wsgi import build

    ports, gunicorn, appliance, processes = deployment
    apps = build(Settings(data_dir=tmp_path / "data", mongodb_url="embedded", mailbox_api_key=KEY, log_level="warning"))
    try:
        listeners = apps.services.listener_stats()
        assert {(d["name"], d["port"]) for d in listeners} == {(name, ports[name]) for name in MAIL_LISTENERS}
        assert {d["instance"] for d in listeners} == {f"{os.uname().nodename}:{appliance.pid}"}
        by_name = {d["name"]: d for d in listeners}
        assert by_name["imap"]["protocol"] == "imap" and by_name["lmtp"]["protocol"] == "lmtp"
        before = by_name["smtp"]["total_connections"]
        with smtplib.SMTP("127.0.0.1", ports["smtp"], timeout=30) as smtp:
            smtp.ehlo("client.test")
        wait_for(
            lambda: next(d for d in apps.services.listener_stats() if d["name"] == "smtp")["total_connections"] == before + 1,
            timeout=20,
            interval=0.5,
        )
        # gunicorn serves the same through the per-protocol stats routes (issue5-api's;
        # checked when they are on this branch).
        status, body = http(gunicorn["api_app"][0], "/api/smtp/stats")
        if status != 404:
            assert status == 200, body
            assert {p["port"] for p in body["ports"]} == {ports[n] for n in ("smtp", "submission", "smtps")}
            assert body["totals"]["total_connections"] >= before + 1
    finally:
        apps.client.close()
