"""Raw message bytes in the GridFS bucket ``raw`` (GridFS spec: ``raw.files``, ``raw.chunks``).

Writes build the GridFS documents directly so the delivery writer can store the
bytes of many messages with one ``insert_many`` per collection (group commit); any
GridFS driver or ``mongofiles`` reads them back. No 16 MB document limit applies.
"""
from __future__ import annotations

from datetime import datetime
from typing import Iterable

from bson import Binary, ObjectId

from mailappliance.storage.mongo import Collections

CHUNK_SIZE = 255 * 1024  # the GridFS default


def blob_documents(blob_id: ObjectId, data: bytes, filename: str, when: datetime) -> tuple[dict, list[dict]]:
    """The ``raw.files`` document and the ``raw.chunks`` documents for ``data``."""
    files_doc = {
        "_id": blob_id,
        "length": len(data),
        "chunkSize": CHUNK_SIZE,
        "uploadDate": when,
        "filename": filename,
        "metadata": {"contentType": "message/rfc822"},
    }
    chunks = [
        {"_id": ObjectId(), "files_id": blob_id, "n": n, "data": Binary(data[offset : offset + CHUNK_SIZE])}
        for n, offset in enumerate(range(0, max(len(data), 1), CHUNK_SIZE))
    ]
    return files_doc, chunks


class BlobStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections

    def read(self, blob_id: ObjectId) -> bytes:
        """The stored bytes, exactly; chunks are read by a bounded index range."""
        files_doc = self.c.raw_files.find_one({"_id": blob_id}, {"length": 1, "chunkSize": 1})
        if files_doc is None:
            raise KeyError(blob_id)
        count = -(-files_doc["length"] // files_doc["chunkSize"]) or 1
        parts = {
            doc["n"]: bytes(doc["data"])
            for doc in self.c.raw_chunks.find({"files_id": blob_id, "n": {"$gte": 0, "$lt": count}}, {"n": 1, "data": 1})
        }
        data = b"".join(parts[n] for n in range(count))
        if len(data) != files_doc["length"]:
            raise ValueError(f"blob {blob_id} is damaged: {len(data)} of {files_doc['length']} bytes")
        return data

    def delete_unreferenced(self, blob_ids: Iterable[ObjectId]) -> int:
        """Delete the blobs no message and no queued email refers to any more."""
        ids = list(set(blob_ids))
        if not ids:
            return 0
        used = set(self.c.messages.distinct("blob", {"blob": {"$in": ids}}))
        used |= set(self.c.outgoing.distinct("blob", {"blob": {"$in": ids}}))
        unused = [i for i in ids if i not in used]
        if unused:
            self.c.raw_chunks.delete_many({"files_id": {"$in": unused}})
            self.c.raw_files.delete_many({"_id": {"$in": unused}})
        return len(unused)
