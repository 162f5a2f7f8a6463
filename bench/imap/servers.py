"""The two IMAP servers under test, each started in its own temp dir on a free loopback port.

- ``Appliance``: ``python -m mailappliance`` with only the IMAP (no TLS) listener and the
  Mailbox API, the embedded database, ``ALLOW_PLAINTEXT_AUTH=true``; the account is created
  through the Mailbox API.
- ``Dovecot``: Debian's dovecot-imapd with a throwaway config (``dovecot -F -c FILE``, never
  the system service), a passwd-file user and a Maildir under the temp dir.

Both are children of the benchmark and are stopped by ``stop()`` or, on any failure, by
``Servers.cleanup()`` (also registered with atexit).
"""
from __future__ import annotations

import atexit
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the SMTP benchmark's helpers
from smtp_ingest import (  # noqa: E402
    API_KEY, BenchError, Processes, descendants, free_port, http, peak_rss_mib, stop, tail, wait_for_port,
)

from workload import PASSWORD, USER  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 120.0  # appliance start-up (the embedded database, a TLS certificate)


class Servers(Processes):
    """Every process the benchmark starts, stopped newest first on cleanup (also at exit)."""

    def __init__(self) -> None:
        super().__init__()
        atexit.register(self.cleanup)


class Appliance:
    name = "appliance"

    def __init__(self, servers: Servers, home: Path) -> None:
        self.servers, self.home = servers, home
        self.log_path = home / "appliance.log"
        self.process: subprocess.Popen | None = None
        self.port = 0
        self.db_pids: list[int] = []

    def start(self) -> int:
        data = self.home / "data"
        self.home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "LMTP_", "IMAP_", "MONGODB_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DATA_DIR=str(data),
            DOTENV_PATH=str(self.home / "none"),
            SMTP_HOST="127.0.0.1",
            SMTP_25_PORT="0",
            SMTP_587_PORT="0",
            SMTP_465_PORT="0",
            LMTP_PORT="0",
            IMAP_PORT="auto",
            IMAP_SSL_PORT="0",
            API_PORT="auto",
            MAILBOX_API_PORT="auto",
            MAILBOX_API_KEY=API_KEY,
            ALLOWED_DOMAINS="example.com",
            ALLOW_PLAINTEXT_AUTH="true",
            LOG_LEVEL="warning",
        )
        with open(self.log_path, "wb") as log:
            self.process = self.servers.spawn([sys.executable, "-m", "mailappliance"], cwd=self.home, env=env,
                                              stdout=log, stderr=log)
        try:
            ports = self._wait_for_ports(data / "ports.json")
            self.db_pids = descendants(self.process.pid)
            self.servers.orphans += self.db_pids
            if "imap" not in ports:
                raise BenchError(f"no 'imap' port in ports.json: {ports}")
            status, body = http("POST", f"http://127.0.0.1:{ports['mailbox-api']}/api/mailboxes",
                                {"username": USER, "password": PASSWORD})
            if status != 201:
                raise BenchError(f"creating the mailbox: HTTP {status} {body}")
            self.port = ports["imap"]
            wait_for_port(self.port, self.process)
        except BaseException:
            self.explain()
            raise
        return self.port

    def _wait_for_ports(self, path: Path) -> dict:
        import json

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the appliance exited with code {self.process.returncode} while starting")
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                time.sleep(0.1)
        raise BenchError(f"no {path} after {START_TIMEOUT:.0f} s")

    def memory(self) -> str:
        own = peak_rss_mib(self.process.pid) if self.process else None
        db = sum(filter(None, (peak_rss_mib(pid) for pid in self.db_pids)))
        return "" if own is None else f"peak RSS: appliance {own:.0f} MiB, embedded database {db:.0f} MiB"

    def explain(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            print(f"  appliance exited with code {self.process.returncode}", file=sys.stderr)
        print(f"  --- tail of {self.log_path} ---\n{tail(self.log_path)}", file=sys.stderr)

    def stop(self) -> None:
        started = time.monotonic()
        code = stop(self.process)
        print(f"  stopped with SIGTERM: exit code {code} after {time.monotonic() - started:.1f} s")
        if code != 0:
            self.explain()


DOVECOT_CONF = """\
# Throwaway Dovecot for bench/imap: loopback only, no TLS, one passwd-file user.
protocols = imap
listen = 127.0.0.1
base_dir = {home}/run
state_dir = {home}/state
log_path = {home}/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
default_login_user = dovenull
default_internal_user = dovecot
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {home}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={home}/home/%n
}}
mail_location = maildir:{home}/mail/%n/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service imap {{
  process_limit = 64
}}
"""


class Dovecot:
    name = "dovecot"

    def __init__(self, servers: Servers, home: Path) -> None:
        self.servers, self.home = servers, home
        self.process: subprocess.Popen | None = None
        self.port = 0

    def start(self) -> int:
        # Dovecot's auth process runs as the dovecot user and must reach the passwd-file.
        self.home.parent.chmod(0o711)
        for sub in ("run", "state", "home", "mail"):
            (self.home / sub).mkdir(parents=True)
        uid, gid = os.getuid(), os.getgid()
        if uid == 0:  # Dovecot never accesses mail as root: use nobody, who owns the mail dirs
            import pwd

            nobody = pwd.getpwnam("nobody")
            uid, gid = nobody.pw_uid, nobody.pw_gid
            for sub in ("home", "mail"):
                os.chown(self.home / sub, uid, gid)
        self.port = free_port()
        (self.home / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}\n")
        conf = self.home / "dovecot.conf"
        conf.write_text(DOVECOT_CONF.format(home=self.home, uid=uid, gid=gid, port=self.port))
        self.process = self.servers.spawn(["dovecot", "-F", "-c", str(conf)],
                                          stdout=subprocess.DEVNULL, stderr=open(self.home / "stderr.log", "wb"))
        try:
            wait_for_port(self.port, self.process)
        except BaseException:
            self.explain()
            raise
        return self.port

    def memory(self) -> str:
        return ""

    def explain(self) -> None:
        for name in ("stderr.log", "dovecot.log"):
            print(f"  --- tail of {self.home / name} ---\n{tail(self.home / name)}", file=sys.stderr)

    def stop(self) -> None:
        code = stop(self.process, 10)
        print(f"  stopped with SIGTERM: exit code {code}")
