"""Group commit against the real database: batches, bytes exact, idempotent retries."""
from datetime import datetime, timezone

import gevent
from bson import ObjectId

from mailappliance.storage.blobs import CHUNK_SIZE, BlobStore
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.writer import DeliveryWriter, WriteRequest, _insert_idempotent


def setup(collections):
    folders = FolderStore(collections)
    blobs = BlobStore(collections)
    mailboxes = MailboxStore(collections, folders, blobs)
    box = mailboxes.create("a@example.com", "x")
    writer = DeliveryWriter(collections, folders)
    writer.start()
    return writer, box, blobs, mailboxes


def request_for(box, raw: bytes) -> WriteRequest:
    blob_id = ObjectId()
    now = datetime.now(timezone.utc)
    return WriteRequest(
        received_at=now,
        blobs=[(blob_id, raw, 1)],
        messages=[{"_id": ObjectId(), "mailbox": box["_id"], "folder": box["inbox"], "blob": blob_id, "size": len(raw)}],
        incoming={"_id": ObjectId(), "received_at": now},
    )


def test_concurrent_submissions_are_batched(collections):
    writer, box, blobs, mailboxes = setup(collections)
    requests = [request_for(box, b"Subject: %d\r\n\r\nbody\r\n" % i) for i in range(60)]
    gevent.joinall([gevent.spawn(writer.submit, r) for r in requests], raise_error=True)
    writer.stop()
    assert writer.messages_written == 60
    assert writer.batches < 60, "concurrent sessions share round trips"
    uids = sorted(m["uid"] for m in collections.messages.find({"folder": box["inbox"]}))
    assert uids == list(range(1, 61))
    assert collections.incoming.count_documents({}) == 60
    folder = collections.folders.find_one({"_id": box["inbox"]})
    assert (folder["messages"], folder["unseen"]) == (60, 60)
    assert folder["bytes"] == sum(r.size for r in requests)
    assert mailboxes.usage(["a@example.com"]) == {"a@example.com": folder["bytes"]}


def test_small_message_is_one_document_large_one_is_chunked(collections):
    writer, box, blobs, _ = setup(collections)
    small = b"Subject: s\r\n\r\nx\r\n"
    large = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)  # over 16 MB would work alike
    requests = [request_for(box, small), request_for(box, large)]
    for request in requests:
        writer.submit(request)
    writer.stop()
    (small_id, _, _), (large_id, _, _) = requests[0].blobs[0], requests[1].blobs[0]
    assert blobs.read(small_id, len(small)) == small
    assert blobs.read(large_id, len(large)) == large
    assert collections.raw.count_documents({}) == 1 + 4


def test_insert_is_idempotent_on_retry(collections):
    docs = [{"_id": ObjectId(), "n": i} for i in range(5)]
    _insert_idempotent(collections.incoming, docs[:3])
    _insert_idempotent(collections.incoming, docs)  # a retry after a lost reply
    assert collections.incoming.count_documents({}) == 5


def test_deleted_mailbox_fails_only_its_request(collections):
    writer, box, blobs, mailboxes = setup(collections)
    other = mailboxes.create("b@example.com", "x")
    mailboxes.delete("b@example.com")
    good, bad = request_for(box, b"x\r\n"), request_for(other, b"y\r\n")
    greenlets = [gevent.spawn(writer.submit, good), gevent.spawn(writer.submit, bad)]
    gevent.joinall(greenlets)
    writer.stop()
    assert greenlets[0].successful()
    assert not greenlets[1].successful()
    assert collections.messages.count_documents({}) == 1


def test_an_unstorable_request_is_refused_and_its_batch_mates_stored(collections):
    from mailappliance.storage.writer import MessageUnstorable

    writer, box, blobs, _ = setup(collections)
    bad = request_for(box, b"x\r\n")
    bad.messages[0]["structure"] = {"a\x00b": "key with NUL"}
    huge = request_for(box, b"z\r\n")
    huge.incoming["padding"] = "p" * (17 * 1024 * 1024)
    goods = [request_for(box, b"y%d\r\n" % i) for i in range(5)]
    greenlets = {id(r): gevent.spawn(writer.submit, r) for r in [goods[0], bad, goods[1], huge, *goods[2:]]}
    gevent.joinall(list(greenlets.values()))
    writer.stop()
    assert isinstance(greenlets[id(bad)].exception, MessageUnstorable)
    assert isinstance(greenlets[id(huge)].exception, MessageUnstorable)
    assert all(greenlets[id(r)].successful() for r in goods)
    assert collections.messages.count_documents({}) == 5
    assert collections.raw.count_documents({}) == 5, "the refused messages' bytes are gone"
    folder = collections.folders.find_one({"_id": box["inbox"]})
    assert folder["messages"] == 5


def test_an_unexpected_error_fails_only_its_batch(collections):
    import pytest

    from mailappliance.storage.writer import WriteFailed

    writer, box, blobs, _ = setup(collections)
    broken = request_for(box, b"x\r\n")
    del broken.messages[0]["size"]  # a programming error inside the writer's batch
    with pytest.raises(WriteFailed):
        writer.submit(broken)
    assert writer.alive
    writer.submit(request_for(box, b"y\r\n"))
    writer.stop()
    assert [m["uid"] for m in collections.messages.find()] == [1]


def test_reservation_retried_after_a_lost_reply_is_not_counted_twice(collections):
    store = FolderStore(collections)
    folder = store.create("a@example.com", "INBOX")
    token = ObjectId()
    first = store.reserve(folder["_id"], 2, 100, 2, token=token)
    store.forget([folder["_id"]])  # as after an AutoReconnect: outcome unknown, cache dropped
    again = store.reserve(folder["_id"], 2, 100, 2, token=token)
    assert again == first
    doc = collections.folders.find_one({"_id": folder["_id"]})
    assert (doc["uidnext"], doc["messages"], doc["bytes"]) == (3, 2, 100)
