"""``incoming_emails``: one document per received message (the seed's IncomingEmail)."""
from __future__ import annotations

from typing import Optional

from bson import ObjectId
from bson.errors import InvalidId

from mailappliance.storage.mongo import Collections


def parse_id(text: str) -> Optional[ObjectId]:
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return None


class IncomingStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections

    def page(self, page: int, limit: int, filters: Optional[dict] = None) -> tuple[list[dict], int]:
        """Newest first (by ``_id``, made at receipt); ``total`` is exact when filtered."""
        query = filters or {}
        cursor = self.c.incoming.find(query).sort("_id", -1).skip((page - 1) * limit).limit(limit)
        items = list(cursor)
        total = self.c.incoming.count_documents(query) if query else self.c.incoming.estimated_document_count()
        return items, total

    def get(self, incoming_id: ObjectId) -> Optional[dict]:
        return self.c.incoming.find_one({"_id": incoming_id})

    def delete(self, incoming_id: ObjectId) -> bool:
        return self.c.incoming.delete_one({"_id": incoming_id}).deleted_count == 1
