#!/usr/bin/env python3
"""Outbound drain throughput: the appliance's queue runner against ``smtp-source``, both
delivering to Postfix's ``smtp-sink``, in one run.

1. **smtp-source → smtp-sink**: ``smtp-source -s SESSIONS -m MESSAGES -l SIZE -f
   sender@example.com -t rcpt@sink.test 127.0.0.1:PORT``, timed by the wall clock: the C
   load generator's ceiling on this machine.
2. **appliance → smtp-sink**: MESSAGES messages of SIZE bytes to ``rcpt@sink.test`` are put
   in the queue (``emails`` + ``raw_messages``, the shape inbound writes), due a few seconds
   after the appliance is started, so start-up is not timed. ``sink.test`` is found through
   MX records served by dnsmasq on loopback (``local-ttl`` 300 s, as real MX records are
   cached). The appliance is ``python -m mailappliance`` with ``QUEUE_DOMAIN_CONCURRENCY =
   SESSIONS`` (so both sides open as many connections at once), one connection per
   message like smtp-source without ``-d``, and its database is SecantusDB (the embedded
   server, started by this script so it can fill the queue first; journaled writes).
   Time: from the due time to the last ``successful_emails.delivered_at``; every message
   must have a record, or the run fails.

Prints messages/s for both and the ratio. Children are stopped on exit, Ctrl-C or error;
on failure the work directory (logs) is kept and its path printed.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))  # the SMTP benchmark's process helpers
from smtp_ingest import BenchError, Processes, free_port, wait_for_port  # noqa: E402

SENDER, RECIPIENT = "sender@example.com", "rcpt@sink.test"
DUE_AFTER = 8.0  # seconds between filling the queue and the messages falling due
TIMEOUT = 900.0


def message(size: int, n: int) -> bytes:
    """A message of ``size`` bytes shaped like smtp-source's (headers, then lines of x)."""
    head = (
        f"From: <{SENDER}>\r\nTo: <{RECIPIENT}>\r\nSubject: bench {n}\r\n"
        f"Message-ID: <{n}@bench.example.com>\r\n\r\n"
    ).encode()
    body_len = max(0, size - len(head))
    line = b"x" * 78 + b"\r\n"
    body = (line * (body_len // len(line) + 1))[:body_len]
    if not body.endswith(b"\r\n"):
        body = body[:-2] + b"\r\n" if len(body) >= 2 else b"\r\n"
    return head + body


class Bench(Processes):
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        super().__init__()
        self.args = args
        self.workdir = workdir

    # ------------------------------------------------------------------ peers
    def sink(self) -> int:
        port = free_port()
        process = self.spawn(["smtp-sink", "-u", "nobody", f"127.0.0.1:{port}", "1024"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(port, process)
        return port

    def dnsmasq(self) -> int:
        port = free_port(socket.SOCK_DGRAM)
        conf = self.workdir / "dnsmasq.conf"
        conf.write_text(
            f"port={port}\nlisten-address=127.0.0.1\nbind-interfaces\nno-resolv\nno-hosts\nno-poll\nlocal=/test/\n"
            "local-ttl=300\nmx-host=sink.test,mx.sink.test,10\nhost-record=mx.sink.test,127.0.0.1\n"
        )
        self.spawn(["dnsmasq", "-k", "-C", str(conf), "--user=root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
        return port

    def database(self) -> str:
        home = self.workdir / "db"
        home.mkdir()
        config = home / "secantusd.toml"
        config.write_text("")
        port = free_port()
        self.spawn(
            [sys.executable, "-m", "secantus", "--config", str(config), "--host", "127.0.0.1", "--port", str(port),
             "--storage-path", str(home / "data"), "--cache-size", "256M"],
            stdout=subprocess.DEVNULL, stderr=open(home / "db.log", "w"),
        )
        wait_for_port(port, self.processes[-1], 60)
        return f"mongodb://127.0.0.1:{port}/bench?directConnection=true&journal=true&retryWrites=false"

    # ------------------------------------------------------------------ runs
    def smtp_source(self, port: int) -> float:
        a = self.args
        started = time.monotonic()
        done = subprocess.run(
            ["smtp-source", "-s", str(a.sessions), "-m", str(a.messages), "-l", str(a.size), "-f", SENDER, "-t", RECIPIENT, f"127.0.0.1:{port}"],
            capture_output=True, timeout=TIMEOUT,
        )
        if done.returncode != 0:
            raise BenchError(f"smtp-source failed: {done.stderr.decode()[:500]}")
        return time.monotonic() - started

    def appliance(self, sink_port: int, dns_port: int, url: str) -> float:
        import pymongo

        from mailappliance.storage.mongo import Collections, ensure_indexes
        from mailappliance.storage.queue import enqueue

        a = self.args
        client = pymongo.MongoClient(url, tz_aware=True)
        db = client.get_default_database()
        ensure_indexes(db)
        collections = Collections(db)
        due = datetime.now(timezone.utc) + timedelta(seconds=DUE_AFTER + a.messages / 2000)
        for first in range(0, a.messages, 500):
            enqueue(collections, [(SENDER, [RECIPIENT], message(a.size, n)) for n in range(first, min(a.messages, first + 500))], due)
        if datetime.now(timezone.utc) > due - timedelta(seconds=3):
            raise BenchError("filling the queue took too long; the messages fell due before the appliance started")
        home = self.workdir / "appliance"
        home.mkdir()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SMTP_", "LMTP_", "IMAP_", "MONGODB_", "QUEUE_", "DNS_"))}
        env.update(
            PYTHONPATH=str(ROOT), DATA_DIR=str(home / "data"), DOTENV_PATH=str(home / "none.env"), MONGODB_URL=url,
            SMTP_HOST="127.0.0.1", SMTP_25_PORT="auto", SMTP_587_PORT="0", SMTP_465_PORT="0", LMTP_PORT="0",
            API_PORT="0", MAILBOX_API_PORT="0", MAILBOX_API_KEY="bench-key-0123456789abcdef", SMTP_HOSTNAME="bench.example.com",
            DNS_SERVERS=f"127.0.0.1:{dns_port}", OUTBOUND_SMTP_PORT=str(sink_port), QUEUE_DOMAIN_CONCURRENCY=str(a.sessions),
            QUEUE_CONCURRENCY=str(max(50, a.sessions)), QUEUE_POLL_INTERVAL="0.1", LOG_LEVEL="warning",
        )
        log = open(home / "appliance.log", "w")
        process = self.spawn([sys.executable, "-m", "mailappliance"], env=env, cwd=home, stdout=log, stderr=log)
        deadline = time.monotonic() + TIMEOUT
        while collections.successful.estimated_document_count() < a.messages:
            if process.poll() is not None:
                raise BenchError(f"appliance exited with {process.returncode}; see {home / 'appliance.log'}")
            if time.monotonic() > deadline:
                raise BenchError("the queue did not drain in time")
            time.sleep(0.2)
        last = max(r["delivered_at"] for r in collections.successful.find({}, {"delivered_at": 1}))
        sent = collections.outgoing.count_documents({"status": "sent"})
        if sent != a.messages:
            raise BenchError(f"{sent} of {a.messages} messages are sent")
        process.send_signal(signal.SIGTERM)
        process.wait(60)
        client.close()
        return (last - due).total_seconds()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=5000)
    parser.add_argument("--sessions", type=int, default=20)
    parser.add_argument("--size", type=int, default=10240)
    args = parser.parse_args()
    for tool in ("smtp-sink", "smtp-source", "dnsmasq"):
        if shutil.which(tool) is None:
            print(f"drain: {tool} is missing (apt-get install postfix dnsmasq-base)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="bench-outbound-"))
    bench = Bench(args, workdir)
    ok = False
    try:
        print(f"{args.messages} messages of {args.size} bytes, {args.sessions} connections at once", flush=True)
        sink_port = bench.sink()
        dns_port = bench.dnsmasq()
        source = bench.smtp_source(sink_port)
        print(f"smtp-source -> smtp-sink: {args.messages / source:8.1f} messages/s ({source:.2f} s)", flush=True)
        url = bench.database()
        drain = bench.appliance(sink_port, dns_port, url)
        print(f"appliance   -> smtp-sink: {args.messages / drain:8.1f} messages/s ({drain:.2f} s, MX via dnsmasq)", flush=True)
        print(f"ratio appliance / smtp-source: {source / drain:.3f}")
        print(json.dumps({"messages": args.messages, "smtp_source_rate": round(args.messages / source, 1),
                          "appliance_rate": round(args.messages / drain, 1), "ratio": round(source / drain, 4)}))
        ok = True
        return 0
    except BenchError as exc:
        print(f"drain: {exc}", file=sys.stderr)
        return 1
    finally:
        bench.cleanup()
        if ok:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"work directory kept: {workdir}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
