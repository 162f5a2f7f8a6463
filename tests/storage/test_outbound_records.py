"""Newest-first pages by time windows (``storage/time_windows.py``) and the numbers of
``OutboundRecords`` against the real database: the same pages as a plain sort, and how
much each read costs, counted as the documents the windows return (a range on a date
index reads exactly what it holds on the embedded server) - no timings."""
from datetime import datetime, timedelta, timezone

import pytest
from bson import ObjectId

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.outbound_records import LIVE, STATUS_READ_MAX, EmailQuery, OutboundRecords, RecordQuery
from mailappliance.storage.time_windows import PageEnds, newest_first

BURST = 3000


class Counting:
    """A collection that counts its ``find`` calls and the documents they return."""

    def __init__(self, collection):
        self.collection = collection
        self.finds = 0
        self.read = 0

    def __getattr__(self, name):
        return getattr(self.collection, name)

    def find(self, *args, **kwargs):
        docs = list(self.collection.find(*args, **kwargs))
        self.finds += 1
        self.read += len(docs)
        return docs

    def reset(self):
        self.finds = self.read = 0


def oid_at(at: datetime) -> ObjectId:
    return ObjectId(ObjectId.from_datetime(at).binary[:4] + ObjectId().binary[4:])


def newsletter(collections, n=BURST, now=None):
    """``n`` delivery records and ``n`` emails in a 17-minute burst that ended 20 hours ago,
    many sharing a millisecond (ties are ordered by ``_id``); one email in 300 bounced."""
    now = now or datetime.now(timezone.utc)
    start = now - timedelta(hours=20, minutes=17)
    records, emails = [], []
    for i in range(n):
        at = start + timedelta(milliseconds=(i * 7919) % (17 * 60 * 1000) // 3 * 3)
        oid = oid_at(at)
        records.append({"_id": oid, "email_id": oid, "recipient": f"u{i}@d{i % 7}.test", "status": "sent", "delivered_at": at})
        status = "bounced" if i % 300 == 0 else "sent"
        emails.append({"_id": oid, "status": status, "created_at": at, "next_attempt_at": at, "from": "n@x.test", "to": [f"u{i}@d.test"]})
    collections.successful.insert_many(records)
    collections.outgoing.insert_many(emails)
    return records, emails


def plain(docs, key, skip, limit, keep=lambda d: True):
    ordered = sorted((d for d in docs if keep(d)), key=lambda d: (d[key], d["_id"]), reverse=True)
    return [d["_id"] for d in ordered[skip : skip + limit]]


def ids(docs):
    return [d["_id"] for d in docs]


def test_burst_pages_are_those_of_a_plain_sort_and_a_repeated_read_costs_the_page(collections):
    records, _ = newsletter(collections)
    coll = Counting(collections.successful)
    ends = PageEnds()
    for skip, limit in ((0, 10), (10, 10), (2990, 10), (2995, 50), (0, 3000), (3000, 10)):
        got = ids(newest_first(coll, {}, "delivered_at", skip, limit, page_ends=ends))
        assert got == plain(records, "delivered_at", skip, limit), (skip, limit)

    # The dashboard's poll: the first read of a process pays for the burst, the next ones
    # read the page (the window stops where the page ended) plus a few empty windows.
    ends = PageEnds()
    coll.reset()
    first = ids(newest_first(coll, {}, "delivered_at", 0, 10, page_ends=ends))
    assert coll.read == BURST
    for _ in range(3):
        coll.reset()
        assert ids(newest_first(coll, {}, "delivered_at", 0, 10, page_ends=ends)) == first
        assert coll.read <= 10 + 2  # ties at the page's last millisecond
        assert coll.finds <= 20

    # New records come first; the next read costs them and the page.
    now = datetime.now(timezone.utc)
    fresh = [{"_id": oid_at(now), "recipient": f"new{i}@d.test", "status": "sent", "delivered_at": now - timedelta(seconds=i)} for i in range(3)]
    collections.successful.insert_many(fresh)
    coll.reset()
    got = ids(newest_first(coll, {}, "delivered_at", 0, 10, page_ends=ends))
    assert got == plain(records + fresh, "delivered_at", 0, 10) and coll.read <= 13 + 2

    # Records gone below where the page ended: the windows go on below it, still exact.
    gone = plain(records, "delivered_at", 0, 20)
    collections.successful.delete_many({"_id": {"$in": gone}})
    left = [r for r in records + fresh if r["_id"] not in set(gone)]
    assert ids(newest_first(coll, {}, "delivered_at", 0, 10, page_ends=ends)) == plain(left, "delivered_at", 0, 10)


def test_bounds_and_a_remembered_end_outside_them(collections):
    records, _ = newsletter(collections, 600)
    ends = PageEnds()
    times = sorted(r["delivered_at"] for r in records)
    since, until = times[100], times[400]
    inside = [r for r in records if since <= r["delivered_at"] < until]
    for s, u, pool in ((since, None, [r for r in records if r["delivered_at"] >= since]), (None, until, [r for r in records if r["delivered_at"] < until]), (since, until, inside)):
        for _ in range(2):  # the second read starts from where the first page ended
            got = ids(newest_first(collections.successful, {}, "delivered_at", 5, 20, since=s, until=u, page_ends=ends))
            assert got == plain(pool, "delivered_at", 5, 20)


def test_a_known_number_of_matches_ends_the_walk(collections):
    records, _ = newsletter(collections, 300)
    coll = Counting(collections.successful)
    query = {"recipient": {"$regex": "d3", "$options": "i"}}
    matches = collections.successful.count_documents(query)
    got = ids(newest_first(coll, query, "delivered_at", 0, 50, matches=matches))
    assert got == plain(records, "delivered_at", 0, 50, lambda r: "d3" in r["recipient"])
    walked = coll.finds
    coll.reset()
    newest_first(coll, query, "delivered_at", 0, 50)
    assert walked < coll.finds  # without it: every window back to 1970
    coll.reset()
    assert newest_first(coll, query, "delivered_at", 0, 50, matches=0) == [] and coll.finds == 0


@pytest.fixture
def records(collections):
    return OutboundRecords(collections, BlobStore(collections))


def test_emails_by_status_rare_and_common_are_those_of_a_plain_sort(collections, records):
    _, emails = newsletter(collections)
    counting = Counting(collections.outgoing)
    records.c = type("C", (), {"outgoing": counting})()
    for status, limit, page in (("bounced", 10, 1), ("bounced", 3, 4), ("sent", 10, 1), ("sent", 50, 3), ("queued", 10, 1)):
        items, total = records.emails_page(EmailQuery(status=status), page, limit)
        keep = lambda d: d["status"] == status  # noqa: E731
        assert ids(items) == plain(emails, "created_at", (page - 1) * limit, limit, keep), (status, page)
        assert total == sum(1 for d in emails if keep(d))
    assert sum(1 for d in emails if d["status"] == "bounced") <= STATUS_READ_MAX < sum(1 for d in emails if d["status"] == "sent")

    counting.reset()
    records.emails_page(EmailQuery(status="bounced"), 1, 10)  # one read of the bounced ones
    assert counting.finds == 1 and counting.read == 10
    counting.reset()
    records.emails_page(EmailQuery(status="queued"), 1, 10)  # none: no window at all
    assert counting.finds == 0
    records.emails_page(EmailQuery(status="sent"), 1, 10)
    counting.reset()
    items, _ = records.emails_page(EmailQuery(status="sent"), 1, 10)  # the poll after the first
    assert len(items) == 10 and counting.read <= 10 + 2


def test_record_pages_filtered_and_not(collections, records):
    newsletter(collections, 500)
    everything = list(collections.successful.find(LIVE))
    for q in (RecordQuery(), RecordQuery(recipient="D2.TEST"), RecordQuery(recipient="nobody")):
        for page in (1, 2):
            items, total = records.successful_page(q, page, 25)
            keep = lambda d: q.recipient is None or q.recipient.lower() in d["recipient"]  # noqa: E731
            assert ids(items) == plain(everything, "delivered_at", (page - 1) * 25, 25, keep)
            assert total == sum(1 for d in everything if keep(d))


def test_an_hour_settles_after_the_lease_and_a_margin(collections):
    assert OutboundRecords(collections, BlobStore(collections)).settle == timedelta(minutes=15)
    records = OutboundRecords(collections, BlobStore(collections), lease_seconds=1800)
    assert records.settle == timedelta(minutes=40)
    now = datetime.now(timezone.utc).replace(minute=30, second=0, microsecond=0)
    hour = now - timedelta(hours=1, minutes=30)  # ended 30 minutes ago: a record may still come
    collections.successful.insert_one({"recipient": "a@x.test", "delivered_at": hour + timedelta(minutes=59)})
    assert records.stats(now)["last_24h"]["delivered"] == 1
    collections.successful.insert_one({"recipient": "b@x.test", "delivered_at": hour + timedelta(minutes=58)})  # written late
    assert records.stats(now)["last_24h"]["delivered"] == 2
    assert hour not in records._delivered.settled
    later = now + timedelta(minutes=15)  # ended 45 minutes ago: settled, counted once
    assert records.stats(later)["last_24h"]["delivered"] == 2 and hour in records._delivered.settled


def test_queue_total_does_not_dip_while_messages_finish(collections, records):
    now = datetime.now(timezone.utc) - timedelta(minutes=1)
    collections.outgoing.insert_many(
        [{"status": s, "created_at": now, "next_attempt_at": now} for s in ["queued"] * 4 + ["sent"] * 3 + ["deferred"]]
    )
    first = records.stats()["queue"]
    assert (first["queued"], first["sent"], first["deferred"], first["total"]) == (4, 3, 1, 8)
    collections.outgoing.update_many({"status": "queued"}, {"$set": {"status": "sent"}})  # finished meanwhile
    collections.outgoing.insert_one({"status": "queued", "created_at": datetime.now(timezone.utc), "next_attempt_at": now})
    second = records.stats()["queue"]
    assert second["queued"] == 1 and second["sent"] == 3  # finished counts kept a while
    assert second["total"] == 9
    records.changed()
    third = records.stats()["queue"]
    assert (third["queued"], third["sent"], third["total"]) == (1, 7, 9)
