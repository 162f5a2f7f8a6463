"""Turn MongoDB documents into JSON-safe dicts (ObjectId and datetime as strings)."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from bson import ObjectId


def jsonable(value: Any) -> Any:
    if isinstance(value, ObjectId):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {("id" if k == "_id" else k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value
