"""``incoming_emails``: one document per received message (the seed's IncomingEmail)."""
from __future__ import annotations

from typing import Optional

from bson import ObjectId
from bson.errors import InvalidId

from mailappliance.storage.mongo import Collections
from mailappliance.storage.time_windows import PageEnds, newest_first


def parse_id(text: str) -> Optional[ObjectId]:
    try:
        return ObjectId(text)
    except (InvalidId, TypeError):
        return None


class IncomingStore:
    def __init__(self, collections: Collections) -> None:
        self.c = collections
        self.page_ends = PageEnds()

    def page(self, page: int, limit: int, filters: Optional[dict] = None) -> tuple[list[dict], int]:
        """Newest first, read by windows of the ``received_at`` index (``newest_first``:
        a sort with a limit reads every match on the embedded server); ``total`` is exact
        when filtered (and then ends the walk once every match was read)."""
        query = filters or {}
        total = self.c.incoming.count_documents(query) if query else self.c.incoming.estimated_document_count()
        matches = total if query else None
        items = newest_first(self.c.incoming, query, "received_at", (page - 1) * limit, limit, None, None, None, matches, self.page_ends)
        return items, total

    def get(self, incoming_id: ObjectId) -> Optional[dict]:
        return self.c.incoming.find_one({"_id": incoming_id})

    def delete(self, incoming_id: ObjectId) -> bool:
        return self.c.incoming.delete_one({"_id": incoming_id}).deleted_count == 1
