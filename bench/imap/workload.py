"""The IMAP workload: a deterministic corpus of messages and the client operations run against it.

Everything here talks IMAP through imapclient and knows nothing about which server is on the
other end; ``imap_bench.py`` runs it against the appliance and against Dovecot in turn.
Client processes (not threads: the GIL would make one Python core the ceiling) are forked
with ``multiprocessing`` and kept in step with a barrier, so every phase starts at once.
"""
from __future__ import annotations

import base64
import datetime as dt
import multiprocessing
import os
import random
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable

from imapclient import IMAPClient
from imapclient.imapclient import SEEN

USER = "user@example.com"
PASSWORD = "benchpassword"
# Data folders and their share of the corpus; the rest exist (empty) so both servers list the same set.
DATA_FOLDERS = (("INBOX", 0.70), ("Archive", 0.20), ("Lists/Python", 0.10))
EMPTY_FOLDERS = ("Sent", "Drafts", "Trash", "Junk")
SENDERS = [f"sender{i:02d}@{d}" for i, d in enumerate(["example.org", "lists.example.net", "corp.example"] * 8)]
WORDS = ("mail server imap folder message throughput latency index query search fetch store flags seen "
         "report meeting invoice release review patch deploy gevent mongo append select sync maildir "
         "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor").split()
NEWEST = dt.datetime(2026, 11, 1, 12, 0, tzinfo=dt.timezone.utc)
SPAN_DAYS = 90
LOGIN_TIMEOUT = 30.0
PHASE_GRACE = 120.0  # how long past its planned end a phase may run before the bench gives up


@dataclass
class Message:
    folder: str
    flags: tuple[bytes, ...]
    date: dt.datetime
    raw: bytes


def _text(rng: random.Random, size: int) -> str:
    """Lines of about 72 characters of words until ``size`` bytes."""
    lines, total = [], 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(11))
        lines.append(line)
        total += len(line) + 2
    return "\r\n".join(lines)


def _base64(rng: random.Random, size: int) -> str:
    data = base64.b64encode(rng.randbytes(size * 3 // 4)).decode()
    return "\r\n".join(data[i:i + 76] for i in range(0, len(data), 76))


def make_message(rng: random.Random, index: int) -> tuple[bytes, dt.datetime]:
    """One message of 2-20 KB: 60% text/plain, 25% multipart/alternative, 15% multipart/mixed."""
    sender = SENDERS[min(int(rng.paretovariate(1.2)) - 1, len(SENDERS) - 1) if rng.random() < 0.5 else rng.randrange(len(SENDERS))]
    date = NEWEST - dt.timedelta(seconds=rng.randrange(SPAN_DAYS * 86400))
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))).capitalize()
    size = rng.randint(2000, 20000)
    headers = (
        f"Return-Path: <{sender}>\r\n"
        f"Received: from mx.{sender.split('@')[1]} (mx [192.0.2.{index % 250 + 1}]) by mail.example.com; "
        f"{date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"From: \"{sender.split('@')[0].capitalize()}\" <{sender}>\r\n"
        f"To: <{USER}>\r\n"
        f"Subject: {subject} #{index}\r\n"
        f"Date: {date.strftime('%a, %d %b %Y %H:%M:%S +0000')}\r\n"
        f"Message-ID: <bench.{index}.{rng.randrange(10**9)}@{sender.split('@')[1]}>\r\n"
        "MIME-Version: 1.0\r\n"
    )
    kind = rng.random()
    if kind < 0.60:
        body = _text(rng, size - len(headers) - 60)
        raw = headers + "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + body + "\r\n"
    elif kind < 0.85:
        boundary = f"=_alt_{index}"
        text = _text(rng, (size - len(headers)) // 3)
        html = "<html><body><p>" + text.replace("\r\n", "</p>\r\n<p>") + "</p></body></html>"
        raw = (headers + f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
               f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
               f"--{boundary}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n"
               f"--{boundary}--\r\n")
    else:
        boundary = f"=_mix_{index}"
        text = _text(rng, 600)
        attachment = _base64(rng, max(size - len(headers) - 900, 500))
        raw = (headers + f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n'
               f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
               f"--{boundary}\r\nContent-Type: application/pdf; name=\"report-{index}.pdf\"\r\n"
               f"Content-Disposition: attachment; filename=\"report-{index}.pdf\"\r\n"
               f"Content-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n"
               f"--{boundary}--\r\n")
    return raw.encode(), date


def corpus(count: int, seed: int) -> list[Message]:
    """``count`` messages spread over DATA_FOLDERS; about 70% \\Seen and 5% \\Flagged."""
    rng = random.Random(seed)
    messages = []
    cut, bounds = 0.0, []
    for name, share in DATA_FOLDERS:
        cut += share
        bounds.append((round(cut * count), name))
    for i in range(count):
        folder = next(name for bound, name in bounds if i < bound)
        raw, date = make_message(rng, i)
        flags: tuple[bytes, ...] = (b"\\Seen",) if rng.random() < 0.7 else ()
        if rng.random() < 0.05:
            flags += (b"\\Flagged",)
        messages.append(Message(folder, flags, date, raw))
    return messages


def connect(port: int) -> IMAPClient:
    client = IMAPClient("127.0.0.1", port=port, ssl=False, timeout=LOGIN_TIMEOUT)
    client.login(USER, PASSWORD)
    return client


def prepare_folders(port: int) -> None:
    """Create every folder the corpus and the workload use (some servers create a few themselves)."""
    client = connect(port)
    try:
        for name in [n for n, _ in DATA_FOLDERS if n != "INBOX"] + list(EMPTY_FOLDERS):
            if not client.folder_exists(name):
                client.create_folder(name)
    finally:
        client.logout()


# ---------------------------------------------------------------------------- the operations
@dataclass
class ClientState:
    client: IMAPClient
    rng: random.Random
    uids: dict[str, list[int]]  # folder -> its UIDs, read once before timing (nothing is expunged)
    folder: str = "INBOX"

    def uid(self) -> int:
        return self.rng.choice(self.uids[self.folder])


def op_select(s: ClientState) -> None:
    s.folder = s.rng.choice([name for name, _ in DATA_FOLDERS])
    s.client.select_folder(s.folder)


def op_fetch_flags(s: ClientState) -> None:
    # A plain FETCH 1:* (FLAGS UID), as a client refreshing its view does. imapclient 4 drops
    # results it did not ask for by number, so this goes through its imaplib connection; the
    # replies are counted, not parsed (less client CPU on a machine the server shares).
    typ, data = s.client._imap.fetch("1:*", "(FLAGS UID)")
    if typ != "OK" or len(data) < len(s.uids[s.folder]):
        raise RuntimeError(f"FETCH 1:* in {s.folder}: {typ}, {len(data)} replies for {len(s.uids[s.folder])} messages")


def op_fetch_body(s: ClientState) -> None:
    s.client.fetch([s.uid()], ["BODY.PEEK[]"])


def op_fetch_headers(s: ClientState) -> None:
    s.client.fetch([s.uid()], ["BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]"])


def op_search_unseen(s: ClientState) -> None:
    s.client.search(["UNSEEN"])


def op_search_from(s: ClientState) -> None:
    s.client.search(["FROM", s.rng.choice(SENDERS)])


def op_search_since(s: ClientState) -> None:
    s.client.search(["SINCE", (NEWEST - dt.timedelta(days=s.rng.randrange(SPAN_DAYS))).date()])


def op_store(s: ClientState) -> None:
    if s.rng.random() < 0.5:
        s.client.add_flags([s.uid()], [SEEN])
    else:
        s.client.remove_flags([s.uid()], [SEEN])


# name -> (what it sends, function, weight in the mixed phase)
OPERATIONS: dict[str, tuple[str, Callable[[ClientState], None], int]] = {
    "select": ("SELECT a random data folder", op_select, 1),
    "fetch_flags": ("FETCH 1:* (FLAGS UID)", op_fetch_flags, 1),
    "fetch_body": ("UID FETCH <random> BODY.PEEK[]", op_fetch_body, 4),
    "fetch_headers": ("UID FETCH <random> BODY.PEEK[HEADER.FIELDS (SUBJECT FROM)]", op_fetch_headers, 4),
    "search_unseen": ("UID SEARCH UNSEEN", op_search_unseen, 1),
    "search_from": ("UID SEARCH FROM <random sender>", op_search_from, 1),
    "search_since": ("UID SEARCH SINCE <random date>", op_search_since, 1),
    "store": ("UID STORE <random> +FLAGS or -FLAGS (\\Seen)", op_store, 2),
}
MIXED = "mixed"


@dataclass
class PhaseResult:
    elapsed: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # time spent in each op (for latency)
    rates: dict[str, float] = field(default_factory=dict)  # ops/s: each client's count / elapsed, summed


# ---------------------------------------------------------------------------- client processes
def _append_worker(port: int, messages: list[Message], barrier, results) -> None:
    client = connect(port)
    barrier.wait(LOGIN_TIMEOUT)
    for m in messages:
        client.append(m.folder, m.raw, m.flags, m.date)
    client.logout()
    results.put(("ok", len(messages)))


def _ops_worker(port: int, index: int, seed: int, phases: list[tuple[str, float]], barrier, results) -> None:
    client = connect(port)
    uids = {}
    for name, _ in DATA_FOLDERS:
        client.select_folder(name, readonly=True)
        uids[name] = client.search(["ALL"])
        if not uids[name]:
            raise RuntimeError(f"{name} is empty")
    client.select_folder("INBOX")
    state = ClientState(client, random.Random(seed * 1000 + index), uids)
    names = list(OPERATIONS)
    weights = [OPERATIONS[n][2] for n in names]
    out: dict[str, PhaseResult] = {}
    for phase, duration in phases:
        if state.folder != "INBOX":  # every single-op phase works in INBOX, the biggest folder
            state.folder = "INBOX"
            client.select_folder("INBOX")
        result = out[phase] = PhaseResult()
        barrier.wait(PHASE_GRACE)
        started = time.monotonic()
        deadline = started + duration
        now = started
        while now < deadline:
            name = phase if phase != MIXED else state.rng.choices(names, weights)[0]
            OPERATIONS[name][1](state)
            then, now = now, time.monotonic()
            result.counts[name] = result.counts.get(name, 0) + 1
            result.seconds[name] = result.seconds.get(name, 0.0) + now - then
        result.elapsed = now - started
    client.logout()
    results.put(("ok", out))


def _guard(target, barrier, results, *args) -> None:
    """Run ``target`` in a child; any failure is reported with its traceback and breaks the barrier."""
    try:
        target(*args, barrier, results)
    except BaseException:
        results.put(("error", f"client pid {os.getpid()}:\n{traceback.format_exc()}"))
        barrier.abort()


def _run_clients(jobs: list[tuple], timeout: float, with_parent: bool) -> tuple[list, float]:
    """Fork one process per job, start them together; returns their results and the wall time
    from the common start (``with_parent``: the parent is a party of the first barrier)."""
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(len(jobs) + (1 if with_parent else 0))
    results = ctx.Queue()
    workers = [ctx.Process(target=_guard, args=(job[0], barrier, results, *job[1:]), daemon=True) for job in jobs]
    for w in workers:
        w.start()
    try:
        started = time.monotonic()
        if with_parent:
            try:
                barrier.wait(LOGIN_TIMEOUT + 5)
            except Exception:
                pass  # a client failed to log in: its error is in the queue
            started = time.monotonic()
        out, errors = [], []
        deadline = time.monotonic() + timeout
        while len(out) + len(errors) < len(jobs):
            try:
                status, value = results.get(timeout=max(deadline - time.monotonic(), 0.1))
            except Exception:
                errors.append(f"clients did not finish within {timeout:.0f} s")
                break
            (out if status == "ok" else errors).append(value)
            if errors:
                break
        elapsed = time.monotonic() - started
        if errors:
            raise RuntimeError("\n".join(errors))
        return out, elapsed
    finally:
        for w in workers:
            w.join(2)
            if w.is_alive():
                w.kill()
                w.join()


def load(port: int, messages: list[Message], clients: int, timeout: float) -> float:
    """APPEND the corpus over ``clients`` connections; returns the wall time."""
    shares = [messages[i::clients] for i in range(clients)]
    _, elapsed = _run_clients([(_append_worker, port, share) for share in shares], timeout, with_parent=True)
    return elapsed


def operations(port: int, clients: int, seed: int, phases: list[tuple[str, float]], timeout: float) -> dict[str, PhaseResult]:
    """Run ``phases`` (op name or MIXED, seconds) on ``clients`` connections; sums over clients."""
    jobs = [(_ops_worker, port, i, seed, phases) for i in range(clients)]
    results, _ = _run_clients(jobs, timeout, with_parent=False)
    total: dict[str, PhaseResult] = {}
    for phase, _ in phases:
        summed = total[phase] = PhaseResult()
        for per_client in results:
            r = per_client[phase]
            summed.elapsed = max(summed.elapsed, r.elapsed)
            for name, n in r.counts.items():
                summed.counts[name] = summed.counts.get(name, 0) + n
                summed.seconds[name] = summed.seconds.get(name, 0.0) + r.seconds[name]
                summed.rates[name] = summed.rates.get(name, 0.0) + n / r.elapsed
    return total
