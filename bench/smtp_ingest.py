#!/usr/bin/env python3
"""SMTP ingest throughput: the appliance against two reference servers that store nothing.

What it measures: how many messages per second each server accepts over loopback when
Postfix's load generator ``smtp-source`` pushes the same traffic at it::

    smtp-source -s SESSIONS -m MESSAGES -l SIZE -f from@remote.test -t user@example.com 127.0.0.1:PORT

The time is the wall clock around the smtp-source process, so it covers connecting,
EHLO, MAIL/RCPT/DATA and QUIT for every message. The three servers, in one run:

1. **appliance** - ``python -m mailappliance`` in a fresh temp dir with its embedded
   database (SecantusDB as a child process, journaled writes: the real durable
   configuration). Before timing, a mailbox for user@example.com is created through the
   Mailbox API; afterwards the incoming-emails API must count exactly MESSAGES stored
   messages, or the run fails. Its peak RSS (VmHWM) and the database's are reported.
2. **aiosmtpd** - a handler whose ``handle_DATA`` answers "250 OK" and keeps nothing
   (``bench/aiosmtpd_sink.py``): the cost of a Python asyncio SMTP server alone.
3. **smtp-sink** - Postfix's C test server, which discards everything: roughly the
   ceiling of smtp-source itself on this machine.

At the end it prints messages/s for each and the ratios appliance/aiosmtpd and
appliance/smtp-sink. Every child process is stopped on exit, Ctrl-C or error; on
failure the temp dir (with the appliance's log) is kept and its path printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key-0123456789abcdef"
SENDER, RECIPIENT = "from@remote.test", "user@example.com"
START_TIMEOUT = 120.0  # appliance start-up (includes the embedded database and a TLS certificate)
SOURCE_TIMEOUT = 600.0  # one smtp-source run
STOP_TIMEOUT = 60.0


class BenchError(RuntimeError):
    """The benchmark cannot go on; the message says why."""


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise BenchError(f"server exited with code {process.returncode} before listening on {port}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise BenchError(f"nothing listening on 127.0.0.1:{port} after {timeout:.0f} s")


def descendants(pid: int) -> list[int]:
    """Pids of every process below ``pid`` (read from /proc; children first-level first)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


def peak_rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def stop(process: subprocess.Popen, timeout: float = STOP_TIMEOUT) -> int:
    """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            print(f"  pid {process.pid} ignored SIGTERM for {timeout:.0f} s; killing it", file=sys.stderr)
            process.kill()
            process.wait()
    return process.returncode


def kill_pids(pids: list[int]) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def http(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    request = urllib.request.Request(
        url,
        data=None if body is None else json.dumps(body).encode(),
        headers={"content-type": "application/json", "x-api-key": API_KEY},
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode("utf-8", "replace")}


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) or "(empty)"
    except OSError as exc:
        return f"(cannot read {path}: {exc})"


class Processes:
    """Every process a benchmark starts; ``cleanup`` stops them newest first, with their
    children (also the benchmarks under ``imap/`` and ``outbound/``)."""

    def __init__(self) -> None:
        self.processes: list[subprocess.Popen] = []
        self.orphans: list[int] = []  # grandchildren in their own session (the embedded database)

    def spawn(self, command: list[str], **kwargs) -> subprocess.Popen:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, **kwargs)
        self.processes.append(process)
        return process

    def cleanup(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                kill_pids(descendants(process.pid))
                process.kill()
                process.wait()
        kill_pids(self.orphans)
        self.orphans.clear()


class Bench(Processes):
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__()
        self.args = args
        self.workdir = workdir

    def smtp_source(self, port: int) -> float:
        """Run smtp-source against ``port``; returns the elapsed wall-clock seconds."""
        a = self.args
        command = [
            "smtp-source", "-s", str(a.sessions), "-m", str(a.messages), "-l", str(a.size),
            "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}",
        ]
        started = time.monotonic()
        process = self.spawn(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            out, err = process.communicate(timeout=SOURCE_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise BenchError(f"smtp-source did not finish in {SOURCE_TIMEOUT:.0f} s") from None
        elapsed = time.monotonic() - started
        if process.returncode != 0:
            text = (err or out).decode("utf-8", "replace").strip()
            raise BenchError(f"smtp-source exited with code {process.returncode}:\n{text}")
        return elapsed

    def report(self, elapsed: float) -> float:
        rate = self.args.messages / elapsed
        print(f"  {self.args.messages} messages in {elapsed:.2f} s = {rate:.1f} messages/s", flush=True)
        return rate

    # ------------------------------------------------------------------ servers
    def appliance(self) -> float:
        home = self.workdir / "appliance"
        data = home / "data"
        home.mkdir()
        log_path = home / "appliance.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "LMTP_", "IMAP_", "MONGODB_"))}
        env.update(
            PYTHONPATH=str(ROOT),
            DATA_DIR=str(data),
            DOTENV_PATH=str(home / "none"),
            SMTP_HOST="127.0.0.1",
            SMTP_25_PORT="auto",
            SMTP_587_PORT="0",
            SMTP_465_PORT="0",
            LMTP_PORT="0",
            API_PORT="auto",
            MAILBOX_API_PORT="auto",
            MAILBOX_API_KEY=API_KEY,
            ALLOWED_DOMAINS="example.com",
            LOG_LEVEL="warning",
        )
        with open(log_path, "wb") as log:
            process = self.spawn([sys.executable, "-m", "mailappliance"], cwd=home, env=env, stdout=log, stderr=log)
        try:
            ports = self._wait_for_ports(process, data / "ports.json")
            self.orphans += descendants(process.pid)  # the embedded database (own session)
            status, body = http("POST", f"http://127.0.0.1:{ports['mailbox-api']}/api/mailboxes",
                                {"username": RECIPIENT, "password": "benchpassword"})
            if status != 201:
                raise BenchError(f"creating the mailbox: HTTP {status} {body}")
            elapsed = self.smtp_source(ports["smtp"])
            rate = self.report(elapsed)

            status, body = http("GET", f"http://127.0.0.1:{ports['api']}/api/incoming-emails?limit=1&source=smtp")
            if status != 200:
                raise BenchError(f"counting stored messages: HTTP {status} {body}")
            stored = body["total"]
            _, mailbox = http("GET", f"http://127.0.0.1:{ports['mailbox-api']}/api/mailboxes/{RECIPIENT}")
            print(f"  stored (incoming-emails total): {stored}; mailbox usedBytes: {mailbox.get('usedBytes')}")
            if stored != self.args.messages:
                raise BenchError(f"the appliance stored {stored} messages, not {self.args.messages}")
            own, db = peak_rss_mib(ports["pid"]), [peak_rss_mib(pid) for pid in self.orphans]
            if own is not None:
                print(f"  peak RSS: appliance {own:.0f} MiB, embedded database {sum(filter(None, db)):.0f} MiB")
        except BaseException:
            if process.poll() is not None:
                print(f"  appliance exited with code {process.returncode}", file=sys.stderr)
            print(f"  --- tail of {log_path} ---\n{tail(log_path)}", file=sys.stderr)
            raise
        started = time.monotonic()
        code = stop(process)
        print(f"  stopped with SIGTERM: exit code {code} after {time.monotonic() - started:.1f} s")
        if code != 0:
            print(f"  --- tail of {log_path} ---\n{tail(log_path)}", file=sys.stderr)
        return rate

    def _wait_for_ports(self, process: subprocess.Popen, path: Path) -> dict:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise BenchError(f"the appliance exited with code {process.returncode} while starting")
            try:
                return json.loads(path.read_text())
            except (OSError, ValueError):  # not there yet, or half written
                time.sleep(0.1)
        raise BenchError(f"no {path} after {START_TIMEOUT:.0f} s")

    def aiosmtpd(self) -> float:
        port = free_port()
        sink = Path(__file__).with_name("aiosmtpd_sink.py")
        process = self.spawn([sys.executable, str(sink), str(port)])
        wait_for_port(port, process)
        rate = self.report(self.smtp_source(port))
        stop(process, 10)
        return rate

    def smtp_sink(self) -> float:
        port = free_port()
        user = ["-u", "nobody"] if os.geteuid() == 0 else []
        process = self.spawn(["smtp-sink", *user, f"127.0.0.1:{port}", "1024"])
        wait_for_port(port, process)
        rate = self.report(self.smtp_source(port))
        stop(process, 10)
        return rate


def interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` in :func:`main` stops the servers."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", "-s", type=int, default=20, help="parallel SMTP sessions (smtp-source -s)")
    parser.add_argument("--messages", "-m", type=int, default=2000, help="messages in total (smtp-source -m)")
    parser.add_argument("--size", "-l", type=int, default=10240, help="message size in bytes (smtp-source -l)")
    args = parser.parse_args()
    for tool in ("smtp-source", "smtp-sink"):
        if shutil.which(tool) is None:
            print(f"{tool} not found: install Postfix (Debian: apt-get install postfix)", file=sys.stderr)
            return 2
    missing = [name for name in ("gevent", "pymongo", "secantus", "aiosmtpd") if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{sys.executable} lacks {', '.join(missing)}: run with the repo's venv "
              "(.venv, or PYTHON=/path/to/venv/bin/python bench/smtp_ingest)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)

    workdir = Path(tempfile.mkdtemp(prefix="smtp-ingest-"))
    bench = Bench(args, workdir)
    print(f"smtp-source -s {args.sessions} -m {args.messages} -l {args.size} "
          f"-f {SENDER} -t {RECIPIENT} (work dir {workdir})", flush=True)
    rates: dict[str, float] = {}
    ok = False
    try:
        for name, run in (("appliance", bench.appliance), ("aiosmtpd", bench.aiosmtpd), ("smtp-sink", bench.smtp_sink)):
            print(f"{name}:", flush=True)
            rates[name] = run()
        ok = True
    except BenchError as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        bench.cleanup()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir} for inspection", file=sys.stderr)
    if not ok:
        return 1

    print()
    print(f"{'server':<12}{'messages/s':>12}")
    for name, rate in rates.items():
        print(f"{name:<12}{rate:>12.1f}")
    print()
    print(f"appliance / aiosmtpd:  {rates['appliance'] / rates['aiosmtpd']:.3f}")
    print(f"appliance / smtp-sink: {rates['appliance'] / rates['smtp-sink']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
