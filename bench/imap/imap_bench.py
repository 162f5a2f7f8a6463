#!/usr/bin/env python3
"""IMAP throughput: the same workload against the appliance and against Dovecot, in one run.

For each server, in a fresh temp dir on a free loopback port (see ``servers.py``):

1. **load** - APPEND a deterministic corpus (``--messages``, 2-20 KB, a third multipart, with
   Date/INTERNALDATE over 90 days, ~70% \\Seen) into INBOX, Archive and Lists/Python over
   ``--clients`` connections: messages/s.
2. **mbsync** - a full sync of the account to an empty local Maildir (every message must
   arrive), then a second run with nothing to do: wall time of each.
3. **operations** - ``--clients`` imapclient processes run each operation alone for
   ``--phase-seconds`` (SELECT, FETCH 1:* (FLAGS UID), UID FETCH BODY.PEEK[] and
   BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)], UID SEARCH UNSEEN / FROM / SINCE, UID STORE
   +/-FLAGS \\Seen), then a weighted mix of all of them for ``--mixed-seconds``: ops/s.

It ends with a table: what, appliance, dovecot, and the ratio appliance/dovecot (above 1 the
appliance is faster; for the no-change mbsync, a time, the ratio is dovecot time / appliance
time so it reads the same way). Every process is stopped on exit, Ctrl-C or error; on failure
the temp dir (server logs) is kept and its path printed.
"""
from __future__ import annotations

import argparse
import importlib.util
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import workload  # noqa: E402
from servers import Appliance, BenchError, Dovecot, Servers  # noqa: E402

MBSYNC_TIMEOUT = 300.0
LOAD_TIMEOUT = 600.0
MBSYNC_SETTLE = 1.5  # seconds between the two mbsync runs (see run_server)


def mbsync_rc(home: Path, port: int) -> Path:
    mail = home / "Mail"
    mail.mkdir()
    rc = home / "mbsyncrc"
    rc.write_text(f"""IMAPAccount a
Host 127.0.0.1
Port {port}
User {workload.USER}
Pass {workload.PASSWORD}
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account a

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel c
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
""")
    return rc


def mbsync(rc: Path) -> float:
    started = time.monotonic()
    try:
        out = subprocess.run(["mbsync", "-c", str(rc), "c"], capture_output=True, text=True, timeout=MBSYNC_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise BenchError(f"mbsync -c {rc} c did not finish in {MBSYNC_TIMEOUT:.0f} s") from None
    elapsed = time.monotonic() - started
    if out.returncode != 0:
        raise BenchError(f"mbsync -c {rc} c exited with code {out.returncode}:\n{(out.stdout + out.stderr).strip()}")
    return elapsed


def maildir_count(root: Path) -> int:
    return sum(1 for p in root.rglob("*") if p.is_file() and p.parent.name in ("cur", "new"))


def run_server(server, args: argparse.Namespace, messages: list[workload.Message]) -> dict[str, float]:
    """The whole workload against one server; returns figure name -> value."""
    figures: dict[str, float] = {}
    port = server.start()
    print(f"  listening on 127.0.0.1:{port}", flush=True)
    try:
        workload.prepare_folders(port)
        elapsed = workload.load(port, messages, args.clients, LOAD_TIMEOUT)
        figures["append"] = len(messages) / elapsed
        print(f"  APPEND: {len(messages)} messages in {elapsed:.2f} s = {figures['append']:.1f} messages/s", flush=True)

        (server.home / "mbsync").mkdir()
        rc = mbsync_rc(server.home / "mbsync", port)
        elapsed = mbsync(rc)
        got = maildir_count(server.home / "mbsync" / "Mail")
        if got != len(messages):
            raise BenchError(f"mbsync brought {got} messages to the Maildir, not {len(messages)} (rc file {rc})")
        figures["mbsync_full"] = len(messages) / elapsed
        print(f"  mbsync full: {got} messages in {elapsed:.2f} s = {figures['mbsync_full']:.1f} messages/s", flush=True)
        # mbsync sleeps until a Maildir directory is over a second old ("Maildir notice: sleeping
        # due to recent directory modification"); wait that out so the timing is the server's.
        time.sleep(MBSYNC_SETTLE)
        figures["mbsync_again"] = mbsync(rc)
        print(f"  mbsync again (no change): {figures['mbsync_again']:.2f} s", flush=True)

        phases = [(name, args.phase_seconds) for name in workload.OPERATIONS] + [(workload.MIXED, args.mixed_seconds)]
        timeout = sum(d for _, d in phases) + workload.PHASE_GRACE
        results = workload.operations(port, args.clients, args.seed, phases, timeout)
        for name in workload.OPERATIONS:
            r = results[name]
            figures[name] = r.rates.get(name, 0.0)
            latency = 1000 * r.seconds[name] / r.counts[name] if r.counts.get(name) else float("nan")
            print(f"  {name:<14} {figures[name]:>9.1f} ops/s  ({r.counts.get(name, 0)} ops, mean {latency:.1f} ms)")
        mixed = results[workload.MIXED]
        figures["mixed"] = sum(mixed.rates.values())
        print(f"  {'mixed':<14} {figures['mixed']:>9.1f} ops/s  ({sum(mixed.counts.values())} ops: "
              + ", ".join(f"{n} {mixed.rates[n]:.1f}/s" for n in workload.OPERATIONS if n in mixed.rates) + ")",
              flush=True)
        note = server.memory()
        if note:
            print(f"  {note}")
    except BaseException:
        server.explain()
        raise
    server.stop()
    return figures


ROWS = [
    ("append", "APPEND", "msgs/s"),
    ("mbsync_full", "mbsync full sync", "msgs/s"),
    ("mbsync_again", "mbsync no-change", "s"),
    *[(name, name, "ops/s") for name in workload.OPERATIONS],
    ("mixed", "mixed (total)", "ops/s"),
]


def table(figures: dict[str, dict[str, float]]) -> None:
    a, d = figures.get("appliance"), figures.get("dovecot")
    print(f"{'what':<18}{'unit':>7}{'appliance':>12}{'dovecot':>12}{'ratio':>8}")
    for key, label, unit in ROWS:
        av = a.get(key) if a else None
        dv = d.get(key) if d else None
        ratio = ""
        if av and dv:
            ratio = f"{(dv / av if unit == 's' else av / dv):.3f}"
        cells = [f"{v:>12.2f}" if unit == "s" and v is not None else f"{v:>12.1f}" if v is not None else f"{'-':>12}"
                 for v in (av, dv)]
        print(f"{label:<18}{unit:>7}{cells[0]}{cells[1]}{ratio:>8}")


def interrupt(signum, frame) -> None:
    """SIGTERM unwinds like Ctrl-C, so the ``finally`` in :func:`main` stops the servers."""
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=("appliance", "dovecot"), help="run against one server")
    parser.add_argument("--messages", "-m", type=int, default=2000, help="messages loaded by APPEND")
    parser.add_argument("--clients", "-c", type=int, default=4, help="concurrent IMAP clients (processes)")
    parser.add_argument("--phase-seconds", type=float, default=3.0, help="duration of each single-operation phase")
    parser.add_argument("--mixed-seconds", type=float, default=10.0, help="duration of the mixed phase")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (server logs, Maildirs) after success")
    parser.add_argument("--seed", type=int, default=1, help="corpus and workload random seed")
    args = parser.parse_args()
    names = [args.only] if args.only else ["appliance", "dovecot"]
    if "dovecot" in names and shutil.which("dovecot") is None:
        print("dovecot not found: install it with\n  DEBIAN_FRONTEND=noninteractive apt-get install -y "
              "--no-install-recommends dovecot-imapd\n(the system service is never used; or run --only appliance)",
              file=sys.stderr)
        return 2
    if shutil.which("mbsync") is None:
        print("mbsync not found: install isync (Debian: apt-get install isync)", file=sys.stderr)
        return 2
    need = ["imapclient"] + (["gevent", "pymongo", "secantus"] if "appliance" in names else [])
    missing = [name for name in need if importlib.util.find_spec(name) is None]
    if missing:
        print(f"{sys.executable} lacks {', '.join(missing)}: run with the repo's venv "
              "(.venv, or PYTHON=/path/to/venv/bin/python bench/imap/run)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, interrupt)

    workdir = Path(tempfile.mkdtemp(prefix="imap-bench-"))
    servers = Servers()
    started = time.monotonic()
    messages = workload.corpus(args.messages, args.seed)
    size = sum(len(m.raw) for m in messages)
    print(f"{len(messages)} messages, {size / 2**20:.1f} MiB (mean {size // len(messages)} bytes), "
          f"{args.clients} clients, {args.phase_seconds:g} s per operation, {args.mixed_seconds:g} s mixed "
          f"(work dir {workdir})", flush=True)
    figures: dict[str, dict[str, float]] = {}
    ok = False
    try:
        for name in names:
            print(f"{name}:", flush=True)
            server = (Appliance if name == "appliance" else Dovecot)(servers, workdir / name)
            figures[name] = run_server(server, args, messages)
        ok = True
    except Exception as exc:  # BenchError, a client's error (RuntimeError), imapclient's, OSError
        print(f"FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        servers.cleanup()
        if ok and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            print(f"kept {workdir}" + ("" if ok else " for inspection"), file=sys.stderr)
    if not ok:
        return 1
    print(f"\ntotal {time.monotonic() - started:.0f} s\n")
    table(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
