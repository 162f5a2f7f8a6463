"""The outbound queue against the real database: exclusive claims, leases, flags, the due scan."""
from datetime import timedelta

import gevent
from bson import ObjectId

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.queue import Completion, OutboundQueue, enqueue, requeue_fields, utcnow


def queue_of(collections, lease=300.0):
    return OutboundQueue(collections, BlobStore(collections), lease)


def put(collections, n, now=None):
    return enqueue(collections, [("s@example.com", [f"r{i}@dest.test"], b"Subject: %d\r\n\r\nx\r\n" % i) for i in range(n)], now)


def done(doc):
    return Completion(doc["_id"], doc["lease"], {"$set": {"status": "sent"}, "$unset": {"lease": "", "lease_owner": ""}})


def test_two_runners_claiming_at_once_never_share_a_message(collections):
    ids = put(collections, 300)
    a, b = queue_of(collections), queue_of(collections)
    got = {"a": [], "b": []}

    def drain(queue, name):
        while True:
            docs = queue.claim(20, name)
            if not docs:
                if collections.outgoing.count_documents({"status": "queued"}) == 0:
                    return
                continue
            got[name].extend(d["_id"] for d in docs)
            gevent.sleep(0)

    gevent.joinall([gevent.spawn(drain, a, "a"), gevent.spawn(drain, b, "b")], raise_error=True)
    assert not set(got["a"]) & set(got["b"])
    assert sorted(got["a"] + got["b"]) == sorted(ids)
    assert got["a"] and got["b"]
    for doc in collections.outgoing.find():
        assert doc["status"] == "sending" and doc["lease_owner"] in ("a", "b")


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_finish(collections):
    put(collections, 1)
    first, second = queue_of(collections, lease=0.3), queue_of(collections, lease=0.3)
    [doc] = first.claim(5, "dead")
    assert second.claim(5, "other") == [], "not while the lease runs"
    gevent.sleep(0.4)
    [again] = second.claim(5, "other")
    assert again["_id"] == doc["_id"] and again["lease"] != doc["lease"]
    assert first.finish([done(doc)]) == {doc["_id"]: "lost"}
    assert second.finish([done(again)]) == {doc["_id"]: "done"}
    stored = collections.outgoing.find_one()
    assert stored["status"] == "sent" and "lease" not in stored


def test_renewed_leases_are_kept_and_released_ones_are_due_at_once(collections):
    put(collections, 2)
    holder, other = queue_of(collections, lease=0.4), queue_of(collections, lease=0.4)
    docs = holder.claim(5, "holder")
    for _ in range(3):
        gevent.sleep(0.25)
        assert holder.renew({d["_id"]: d["lease"] for d in docs}) == {d["_id"] for d in docs}
        assert other.claim(5, "other") == []
    assert holder.release({d["_id"]: d["lease"] for d in docs}) == 2
    assert len(other.claim(5, "other")) == 2


def test_claim_skips_messages_not_yet_due_and_those_in_exclude(collections):
    now = utcnow()
    [later] = put(collections, 1, now + timedelta(minutes=5))
    due = put(collections, 2, now)
    queue = queue_of(collections)
    assert [d["_id"] for d in queue.claim(5, "x", exclude=frozenset([due[0]]))] == [due[1]]
    assert collections.outgoing.find_one({"_id": later})["status"] == "queued"


def test_retry_and_delete_while_sending_are_applied_by_the_lease_holder(collections):
    ids = put(collections, 2)
    blobs = BlobStore(collections)
    queue = queue_of(collections)
    docs = {d["_id"]: d for d in queue.claim(5, "x")}
    assert queue.retry(ids[0]) == "scheduled"
    assert queue.delete(ids[1]) == "scheduled"
    assert collections.outgoing.find_one({"_id": ids[0]})["status"] == "sending", "the delivery is not disturbed"
    deferred = [dict(r, status="deferred") for r in docs[ids[0]]["recipients"]]
    completions = [
        Completion(ids[0], docs[ids[0]]["lease"], {"$set": {"status": "deferred", "recipients": deferred}, "$unset": {"lease": ""}}),
        done(docs[ids[1]]),
    ]
    assert queue.finish(completions) == {ids[0]: "flagged", ids[1]: "flagged"}
    assert queue.finish_flagged(completions[0], requeue_fields(deferred, utcnow())) == "retried"
    assert queue.finish_flagged(completions[1], {}) == "deleted"
    retried = collections.outgoing.find_one({"_id": ids[0]})
    assert retried["status"] == "queued" and "retry_requested" not in retried and "lease" not in retried
    assert collections.outgoing.find_one({"_id": ids[1]}) is None
    doc = docs[ids[1]]
    try:
        blobs.read(doc["blob"], doc["size"])
        raise AssertionError("the deleted message's bytes are released")
    except KeyError:
        pass


def test_retry_and_delete_when_idle(collections):
    ids = put(collections, 2)
    queue = queue_of(collections)
    collections.outgoing.update_one({"_id": ids[0]}, {"$set": {"status": "bounced", "recipients.0.status": "bounced", "attempts": 4}})
    assert queue.retry(ids[0]) == "queued"
    doc = collections.outgoing.find_one({"_id": ids[0]})
    assert (doc["status"], doc["attempts"], doc["recipients"][0]["status"]) == ("queued", 0, "queued")
    collections.outgoing.update_one({"_id": ids[1]}, {"$set": {"status": "sent", "recipients.0.status": "sent"}})
    assert queue.retry(ids[1]) == "nothing"
    assert queue.delete(ids[1]) == "deleted"
    assert queue.delete(ids[1]) == "not found" and queue.retry(ObjectId()) == "not found"


def test_due_scan_reads_bounded_windows_not_the_whole_backlog(collections):
    start = utcnow() - timedelta(minutes=10)
    for block in range(10):  # 2,000 due messages spread over ten minutes
        put(collections, 200, start + timedelta(seconds=60 * block))
    queue = queue_of(collections)
    scanner = queue.scanners["queued"]
    claimed = 0
    largest = 0
    original_find = collections.outgoing.find

    while True:
        docs = queue.claim(50, "x")
        if not docs:
            break
        claimed += len(docs)
        window = scanner.width
        largest = max(largest, len(list(original_find({"status": "queued", "next_attempt_at": {"$gte": scanner.floor, "$lt": scanner.floor + window}}, {"_id": 1}))))
    assert claimed == 2000
    assert largest <= 400, f"windows stay near the batch size once the density is known ({largest})"


def test_mail_stored_behind_the_scan_floor_is_found_by_the_next_full_sweep(collections):
    queue = queue_of(collections)
    put(collections, 1)
    assert len(queue.claim(5, "x")) == 1
    assert queue.claim(5, "x") == []
    [late] = put(collections, 1, utcnow() - timedelta(hours=1))  # e.g. another host's clock
    scanner = queue.scanners["queued"]
    scanner.next_full_sweep = 0
    assert [d["_id"] for d in queue.claim(5, "x")] == [late]


def test_a_finish_whose_update_matched_nothing_is_lost_and_its_records_superseded(collections):
    """Another runner took the expired lease over and finished first: ours must not be "done"."""
    put(collections, 1)
    slow, fast = queue_of(collections, lease=0.3), queue_of(collections, lease=0.3)
    [doc] = slow.claim(5, "slow")
    gevent.sleep(0.4)
    [again] = fast.claim(5, "fast")
    assert fast.finish([done(again)]) == {doc["_id"]: "done"}  # unsets the lease
    record = {"_id": ObjectId(), "email_id": doc["_id"], "recipient": "r0@dest.test"}
    report = {"_id": ObjectId(), "email_id": doc["_id"], "addresses": ["r0@dest.test"], "failed": []}
    late = Completion(doc["_id"], doc["lease"], {"$set": {"status": "bounced"}}, bounced=[record], report=report)
    assert slow.finish([late]) == {doc["_id"]: "lost"}
    slow.supersede(late)
    assert collections.bounced.find_one({"_id": record["_id"]})["superseded"] is True
    assert collections.pending_reports.find_one({"_id": report["_id"]}) is None
    assert collections.outgoing.find_one({"_id": doc["_id"]})["status"] == "sent"


def test_a_finish_retried_after_it_applied_is_done_not_lost(collections):
    put(collections, 1)
    queue = queue_of(collections)
    [doc] = queue.claim(5, "runner")
    completion = done(doc)
    assert queue.finish([completion]) == {doc["_id"]: "done"}
    assert queue.finish([completion]) == {doc["_id"]: "done"}, "the answer to the first try was lost: still done"


def test_renew_returns_only_the_leases_still_held(collections):
    ids = put(collections, 2)
    queue = queue_of(collections)
    docs = queue.claim(5, "holder")
    collections.outgoing.update_one({"_id": ids[0]}, {"$set": {"lease": ObjectId()}})
    assert queue.renew({d["_id"]: d["lease"] for d in docs}) == {ids[1]}


def test_records_are_indexed_by_email_id(collections):
    """The ``collections`` fixture declares the schema's indexes (storage/mongo.py INDEXES)."""
    for collection in (collections.successful, collections.bounced):
        assert any(index["key"] == [("email_id", 1)] for index in collection.index_information().values())


def test_database_errors_reach_services_as_queue_store_errors(collections):
    import pytest
    from pymongo import MongoClient

    from mailappliance.storage.mongo import Collections
    from mailappliance.storage.queue import QueueStoreError

    client = MongoClient("mongodb://127.0.0.1:1/x", serverSelectionTimeoutMS=200, connect=False)
    dead = Collections(client.get_default_database())
    with pytest.raises(QueueStoreError):
        OutboundQueue(dead, BlobStore(dead)).renew({ObjectId(): ObjectId()})
