"""``server_stats``: listener counters published by appliance processes, on the embedded DB."""
import smtplib
from datetime import datetime, timedelta, timezone

from mailappliance.services.stats_publisher import StatsPublisher, instance_id
from mailappliance.storage.mongo import SERVER_STATS_SECONDS
from mailappliance.storage.server_stats import ServerStatsStore
from tests.e2e.helpers import wait_for


def listener(name, port, protocol="smtp", **counters):
    item = {
        "name": name, "protocol": protocol, "port": port, "tls": "starttls",
        "current_connections": 0, "total_connections": 0, "rejected_connections": 0, "tls_sessions": 0,
        "messages_accepted": 0, "messages_rejected": 0, "bytes_received": 0, "auth_failures": 0,
        "errors": 0, "started_at": 1700000000.0,
    }
    item.update(counters)
    return item


def test_publish_upserts_one_document_per_listener_and_read_returns_them(collections):
    store = ServerStatsStore(collections)
    store.publish("host-a:1", [listener("smtp", 25, total_connections=3), listener("imap", 143, "imap")])
    store.publish("host-a:1", [listener("smtp", 25, total_connections=7), listener("imap", 143, "imap")])
    assert collections.server_stats.count_documents({}) == 2
    got = store.read(60)
    assert [(d["instance"], d["name"], d["port"]) for d in got] == [("host-a:1", "smtp", 25), ("host-a:1", "imap", 143)]
    assert got[0]["total_connections"] == 7  # the second publish replaced the first
    assert got[0]["protocol"] == "smtp" and got[0]["started_at"] == 1700000000.0
    assert "_id" not in got[0]
    assert datetime.fromisoformat(got[0]["updated_at"]) > datetime.now(timezone.utc) - timedelta(minutes=1)


def test_two_instances_are_kept_apart_and_stale_ones_are_left_out(collections):
    store = ServerStatsStore(collections)
    store.publish("a:1", [listener("smtp", 25, current_connections=2)])
    store.publish("b:2", [listener("smtp", 25, current_connections=5)])
    assert sorted((d["instance"], d["current_connections"]) for d in store.read(60)) == [("a:1", 2), ("b:2", 5)]
    # b:2 went silent ten minutes ago (a killed process): no longer reported as live.
    collections.server_stats.update_many(
        {"instance": "b:2"}, {"$set": {"updated_at": datetime.now(timezone.utc) - timedelta(minutes=10)}}
    )
    assert [d["instance"] for d in store.read(60)] == ["a:1"]


def test_the_collection_expires_dead_instances_by_a_ttl_index(collections):
    indexes = collections.server_stats.index_information()
    ttl = [spec for spec in indexes.values() if spec.get("expireAfterSeconds") is not None]
    assert ttl and ttl[0]["key"] == [("updated_at", 1)]
    assert ttl[0]["expireAfterSeconds"] == SERVER_STATS_SECONDS == 24 * 3600


def test_publishing_nothing_writes_nothing(collections):
    ServerStatsStore(collections).publish("a:1", [])
    assert collections.server_stats.count_documents({}) == 0


def test_publisher_repeats_and_says_no_connection_is_open_when_it_stops(collections):
    store = ServerStatsStore(collections)
    live = [listener("smtp", 2525, current_connections=4, total_connections=9)]
    publisher = StatsPublisher(store, lambda: [dict(item) for item in live], instance="test:1", interval=0.05)
    publisher.start()
    assert store.read(60)[0]["total_connections"] == 9  # published at start, before the first pause
    live[0]["total_connections"] = 10
    wait_for(lambda: store.read(60)[0]["total_connections"] == 10, timeout=5)
    publisher.stop()
    final = store.read(60)
    assert final[0]["current_connections"] == 0 and final[0]["total_connections"] == 10


def test_the_appliance_publishes_its_listeners(appliance_factory, collections):
    app = appliance_factory()  # on the same test database as ``collections``
    store = ServerStatsStore(collections)
    rows = [d for d in store.read(60) if d["instance"] == app.stats_publisher.instance]
    assert app.stats_publisher.instance == instance_id()
    assert {d["name"] for d in rows} == {s.name for s in app.servers}
    assert {(d["name"], d["port"]) for d in rows} == {(s.name, s.port) for s in app.servers}
    smtp = next(s for s in app.servers if s.name == "smtp")
    with smtplib.SMTP("127.0.0.1", smtp.port, timeout=10) as client:
        client.ehlo("client.test")
    app.stats_publisher.publish()
    row = next(d for d in store.read(60) if d["name"] == "smtp" and d["instance"] == app.stats_publisher.instance)
    assert row["total_connections"] >= 1
    app.stop()
    row = next(d for d in store.read(60) if d["name"] == "smtp" and d["instance"] == app.stats_publisher.instance)
    assert row["current_connections"] == 0

