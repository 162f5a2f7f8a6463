"""Raw message bytes, chunked into the ``raw_messages`` collection.

A blob is the exact bytes of a message (as received plus the trace headers this
server adds), split into documents of at most ``CHUNK_SIZE`` bytes whose ``_id`` is
``"<blob id>/<n>"``. Whoever refers to a blob also records its size, so the chunk
ids are known without an index and a read is one ``_id`` lookup. Most mail fits in
one chunk: one document and one index entry per message, which on the embedded
server costs a quarter of GridFS's files + chunks documents and their indexes
(shared/embedded-db.md); large mail has no 16 MB limit.

The first chunk counts the references to the blob (``refs``: the mailbox copies and
queue entries that share it), so nothing needs an index on "who uses this blob".
:meth:`BlobStore.release` drops references and deletes a blob when none is left. A
crash between deleting a message and releasing its blob can leak bytes, never lose
mail.
"""
from __future__ import annotations

from typing import Any, Iterable

from bson import Binary, ObjectId
from pymongo import UpdateOne

from mailappliance.storage.mongo import Collections

CHUNK_SIZE = 1024 * 1024


def chunk_count(size: int) -> int:
    return max(1, -(-size // CHUNK_SIZE))


def chunk_ids(blob_id: ObjectId, size: int) -> list[str]:
    return [f"{blob_id}/{n}" for n in range(chunk_count(size))]


def blob_documents(blob_id: ObjectId, data: bytes, refs: int = 1) -> list[dict]:
    """The chunk documents that store ``data``, referenced ``refs`` times."""
    docs: list[dict[str, Any]] = [
        {"_id": chunk_id, "data": Binary(data[n * CHUNK_SIZE : (n + 1) * CHUNK_SIZE])}
        for n, chunk_id in enumerate(chunk_ids(blob_id, len(data)))
    ]
    docs[0]["refs"] = refs
    return docs


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

    def read_many(self, blobs: list[tuple[ObjectId, int]]) -> dict[ObjectId, bytes]:
        """Several blobs in one query (IMAP FETCH of many bodies); missing ones are left out."""
        ids = [c for blob_id, size in blobs for c in chunk_ids(blob_id, size)]
        found = {doc["_id"]: bytes(doc["data"]) for doc in self.c.raw.find({"_id": {"$in": ids}})}
        result = {}
        for blob_id, size in blobs:
            parts = [found.get(c) for c in chunk_ids(blob_id, size)]
            if all(p is not None for p in parts):
                data = b"".join(parts)  # type: ignore[arg-type]
                if len(data) == size:
                    result[blob_id] = data
        return result

    def release(self, references: Iterable[tuple[ObjectId, int]]) -> int:
        """Drop one reference per ``(blob id, size)`` given; delete blobs left with none.

        Returns how many blobs were deleted.
        """
        counts: dict[tuple[ObjectId, int], int] = {}
        for key in references:
            counts[key] = counts.get(key, 0) + 1
        if not counts:
            return 0
        ops = [UpdateOne({"_id": f"{blob_id}/0"}, {"$inc": {"refs": -n}}) for (blob_id, _), n in counts.items()]
        self.c.raw.bulk_write(ops, ordered=False)
        sizes = {blob_id: size for blob_id, size in counts}
        firsts = [f"{blob_id}/0" for blob_id in sizes]
        unused = [doc["_id"] for doc in self.c.raw.find({"_id": {"$in": firsts}, "refs": {"$lte": 0}}, {"_id": 1})]
        if not unused:
            return 0
        # Guarded by the count itself: a reference taken meanwhile (an IMAP COPY) keeps the blob.
        self.c.raw.delete_many({"_id": {"$in": unused}, "refs": {"$lte": 0}})
        kept = {doc["_id"] for doc in self.c.raw.find({"_id": {"$in": unused}}, {"_id": 1})}
        gone = [ObjectId(first[:-2]) for first in unused if first not in kept]
        rest = [c for blob_id in gone for c in chunk_ids(blob_id, sizes[blob_id])[1:]]
        if rest:
            self.c.raw.delete_many({"_id": {"$in": rest}})
        return len(gone)
