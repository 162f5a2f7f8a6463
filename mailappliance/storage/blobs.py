"""Raw message bytes, chunked into the ``raw_messages`` collection.

A blob is the exact bytes of a message (as received plus the trace headers this
server adds), split into documents of at most ``CHUNK_SIZE`` bytes whose ``_id`` is
``"<blob id>/<n>"``. Whoever refers to a blob also records its size, so the chunk
ids are known without an index and a read is one ``_id`` lookup. Most mail fits in
one chunk: one document and one index entry per message, which on the embedded
server costs a quarter of GridFS's files + chunks documents and their indexes
(shared/embedded-db.md); large mail has no 16 MB limit.
"""
from __future__ import annotations

from typing import Iterable

from bson import Binary, ObjectId

from mailappliance.storage.mongo import Collections

CHUNK_SIZE = 1024 * 1024


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_SIZE))


def chunk_ids(blob_id: ObjectId, size: int) -> list[str]:
    return [f"{blob_id}/{n}" for n in range(chunk_count(size))]


def blob_documents(blob_id: ObjectId, data: bytes) -> list[dict]:
    """The chunk documents that store ``data``."""
    return [
        {"_id": chunk_id, "data": Binary(data[n * CHUNK_SIZE : (n + 1) * CHUNK_SIZE])}
        for n, chunk_id in enumerate(chunk_ids(blob_id, len(data)))
    ]


class BlobStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections

    def read(self, blob_id: ObjectId, size: int) -> bytes:
        """The stored bytes, exactly; raises KeyError when any chunk is missing."""
        ids = chunk_ids(blob_id, size)
        found = {doc["_id"]: bytes(doc["data"]) for doc in self.c.raw.find({"_id": {"$in": ids}})}
        try:
            data = b"".join(found[i] for i in ids)
        except KeyError:
            raise KeyError(blob_id) from None
        if len(data) != size:
            raise ValueError(f"blob {blob_id} is damaged: {len(data)} of {size} bytes")
        return data

    def delete_unreferenced(self, blobs: Iterable[tuple[ObjectId, int]]) -> int:
        """Delete the blobs (id, size) no message and no queued email refers to any more."""
        sizes = dict(blobs)
        if not sizes:
            return 0
        ids = list(sizes)
        used = set(self.c.messages.distinct("blob", {"blob": {"$in": ids}}))
        used |= set(self.c.outgoing.distinct("blob", {"blob": {"$in": ids}}))
        unused = [i for i in ids if i not in used]
        if unused:
            self.c.raw.delete_many({"_id": {"$in": [c for i in unused for c in chunk_ids(i, sizes[i])]}})
        return len(unused)
