"""Outbound delivery by real appliance processes sharing one database: two runners drain
1,000 messages exactly once; a runner killed with SIGKILL mid-drain loses nothing."""
import re
from collections import Counter

import pymongo
import pytest

from mailappliance.storage.mongo import Collections
from mailappliance.storage.queue import enqueue
from tests.conftest import have
from tests.e2e.helpers import wait_for
from tests.e2e.outbound_peers import PEER_ACCEPT, dns_fixture, peer_fixture
from tests.e2e.test_process import start, stop

pytestmark = pytest.mark.skipif(not have("dnsmasq"), reason="dnsmasq (dnsmasq-base) is not installed")

MESSAGES = 1000
CONCURRENCY = 20
MESSAGE_ID = re.compile(rb"Message-ID: <(\d+)@drain.test>")


dns = dns_fixture()
peer = peer_fixture((PEER_ACCEPT,))


def runner_env(db_url, dns, peer, lease="10"):
    return dict(
        MONGODB_URL=db_url,
        DNS_SERVERS=",".join(f"{h}:{p}" for h, p in dns.servers),
        OUTBOUND_SMTP_PORT=str(peer.port),
        QUEUE_POLL_INTERVAL="0.1",
        QUEUE_CONCURRENCY=str(CONCURRENCY),
        QUEUE_LEASE=lease,
        LOG_LEVEL="warning",
        SHUTDOWN_TIMEOUT="5",
    )


def fill(db_url, n=MESSAGES):
    client = pymongo.MongoClient(db_url, tz_aware=True)
    collections = Collections(client.get_default_database())
    for first in range(0, n, 250):
        enqueue(
            collections,
            [
                ("sender@example.com", [f"rcpt{i}@accept.test"], b"Message-ID: <%d@drain.test>\r\nSubject: %d\r\n\r\n%s\r\n" % (i, i, b"x" * 2000))
                for i in range(first, min(n, first + 250))
            ],
        )
    return client, collections


def deliveries(peer) -> Counter:
    return Counter(int(MESSAGE_ID.search(m.data).group(1)) for m in peer.received)


def test_two_runner_processes_deliver_each_message_exactly_once(tmp_path, db_url, dns, peer):
    client, collections = fill(db_url)
    env = runner_env(db_url, dns, peer)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, _ = start(tmp_path / "a", **env)
    b, _ = start(tmp_path / "b", **env)
    try:
        wait_for(lambda: collections.outgoing.count_documents({"status": "sent"}) == MESSAGES, timeout=180, interval=0.5)
    finally:
        for process in (a, b):
            code, stderr = stop(process)
            assert code == 0, stderr
    counts = deliveries(peer)
    assert len(counts) == MESSAGES and max(counts.values()) == 1, "every message delivered exactly once"
    assert collections.successful.count_documents({}) == MESSAGES
    per_runner = Counter(r["runner"].split(":")[1] for r in collections.successful.find({}, {"runner": 1}))
    assert set(per_runner) == {str(a.pid), str(b.pid)}, f"both runners took part: {per_runner}"
    client.close()


def test_sigkill_mid_drain_loses_nothing_and_repeats_at_most_the_messages_in_flight(tmp_path, db_url, dns, peer):
    client, collections = fill(db_url)
    env = runner_env(db_url, dns, peer)
    process, _ = start(tmp_path, **env)
    wait_for(lambda: len(peer.received) >= MESSAGES // 3, timeout=120, interval=0.02)
    process.kill()
    process.wait(10)
    at_kill = len(peer.received)
    in_flight = collections.outgoing.count_documents({"status": "sending"})
    assert 0 < at_kill < MESSAGES
    (tmp_path / "data" / "ports.json").unlink(missing_ok=True)
    process, _ = start(tmp_path, **env)
    try:
        wait_for(lambda: collections.outgoing.count_documents({"status": "sent"}) == MESSAGES, timeout=180, interval=0.5)
    finally:
        code, stderr = stop(process)
        assert code == 0, stderr
    counts = deliveries(peer)
    twice = sorted(i for i, n in counts.items() if n > 1)
    assert len(counts) == MESSAGES, "every message delivered"
    assert max(counts.values()) <= 2
    assert len(twice) <= in_flight <= CONCURRENCY, (twice, in_flight)
    print(f"\nSIGKILL after {at_kill} deliveries: {in_flight} in flight, {len(twice)} delivered twice")
    client.close()
