"""Group commit against the real database: batches, bytes exact, idempotent retries."""
from datetime import datetime, timezone

import gevent
import gridfs
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
    writer = DeliveryWriter(collections, folders, mailboxes)
    writer.start()
    return writer, box, blobs, mailboxes


def request_for(box, raw: bytes) -> WriteRequest:
    blob_id = ObjectId()
    now = datetime.now(timezone.utc)
    return WriteRequest(
        received_at=now,
        blobs=[(blob_id, raw, "q")],
        messages=[{"_id": ObjectId(), "mailbox": box["_id"], "folder": box["inbox"], "blob": blob_id, "size": len(raw)}],
        incoming={"_id": ObjectId(), "received_at": now},
        usage=[(box["_id"], len(raw))],
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
    assert mailboxes.get("a@example.com")["used_bytes"] == sum(r.size for r in requests)


def test_large_message_is_chunked_and_readable_by_gridfs(collections):
    writer, box, blobs, _ = setup(collections)
    raw = bytes(range(256)) * (3 * CHUNK_SIZE // 256 + 7)
    request = request_for(box, raw)
    writer.submit(request)
    writer.stop()
    blob_id = request.blobs[0][0]
    assert blobs.read(blob_id) == raw
    assert gridfs.GridFSBucket(collections.db, "raw").open_download_stream(blob_id).read() == raw
    assert collections.raw_chunks.count_documents({"files_id": blob_id}) == 4


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
