"""Accounts ("mailboxes" in the REST API) and their cascade delete.

A mailbox document's ``_id`` is its lower-cased address, so the lookup made for
every RCPT is one ``find_one`` by ``_id``; it also carries the INBOX folder id and
the quota. Bytes used are the sum of the folders' counters.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Optional

from pymongo.errors import DuplicateKeyError

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import INBOX, FolderStore
from mailappliance.storage.mongo import Collections

PUBLIC_FIELDS = {"password_hash": 0}
# How long a recipient lookup may be reused. Changes made through this process are
# seen at once; another process's new or deleted mailbox within this many seconds.
LOOKUP_CACHE_SECONDS = 5.0


class MailboxExists(Exception):
    pass


class MailboxStore:
    def __init__(self, collections: Collections, folders: FolderStore, blobs: BlobStore) -> None:
        self.c = collections
        self.folders = folders
        self.blobs = blobs
        self._lookups: dict[str, tuple[float, Optional[dict]]] = {}

    def create(self, address: str, password_hash: str, quota: int = 0) -> dict:
        """Create the account with its default folders (RFC 6154 special-use)."""
        now = _millis(datetime.now(timezone.utc))  # what MongoDB keeps, so every reply agrees
        folder_docs = self.folders.default_documents(address)
        inbox = next(f["_id"] for f in folder_docs if f["name"] == INBOX)
        doc = {
            "_id": address,
            "address": address,
            "domain": address.rsplit("@", 1)[1],
            "password_hash": password_hash,
            "quota": quota,
            "inbox": inbox,
            "created_at": now,
            "updated_at": now,
        }
        try:
            self.c.mailboxes.insert_one(doc)
        except DuplicateKeyError:
            raise MailboxExists(address) from None
        self._forget(address)
        try:
            self.c.folders.insert_many(folder_docs)
        except Exception:
            self.c.mailboxes.delete_one({"_id": address})
            raise
        return doc

    def get(self, address: str) -> Optional[dict]:
        return self.c.mailboxes.find_one({"_id": address})

    def lookup(self, address: str) -> Optional[dict]:
        """``get`` for the RCPT path: answers (found or not) are reused for a few seconds."""
        now = time.monotonic()
        cached = self._lookups.get(address)
        if cached is not None and cached[0] > now:
            return cached[1]
        doc = self.get(address)
        if doc is not None and doc.get("quota"):
            doc["used_bytes"] = self.folders.usage([address]).get(address, 0)
        if len(self._lookups) > 10_000:
            self._lookups.clear()
        self._lookups[address] = (now + LOOKUP_CACHE_SECONDS, doc)
        return doc

    def _forget(self, address: str) -> None:
        self._lookups.pop(address, None)

    def page(self, skip: int = 0, limit: int = 100) -> list[dict]:
        cursor = self.c.mailboxes.find({}, PUBLIC_FIELDS).sort("_id", 1).skip(skip).limit(limit)
        return list(cursor)

    def count(self) -> int:
        return self.c.mailboxes.estimated_document_count()

    def domains(self) -> set[str]:
        return set(self.c.mailboxes.distinct("domain"))

    def set_password_hash(self, address: str, password_hash: str) -> bool:
        result = self.c.mailboxes.update_one(
            {"_id": address},
            {"$set": {"password_hash": password_hash, "updated_at": datetime.now(timezone.utc)}},
        )
        self._forget(address)
        return result.matched_count == 1

    def usage(self, addresses: list[str]) -> dict[str, int]:
        return self.folders.usage(addresses)

    def delete(self, address: str) -> bool:
        """Delete the account, its folders, its messages, and bytes nobody else refers to."""
        if self.c.mailboxes.find_one({"_id": address}, {"_id": 1}) is None:
            return False
        folder_ids = [f["_id"] for f in self.c.folders.find({"mailbox": address}, {"_id": 1})]
        in_folders = {"folder": {"$in": folder_ids}}  # served by the {folder, uid} index
        blobs = [(m["blob"], m["size"]) for m in self.c.messages.find(in_folders, {"blob": 1, "size": 1})]
        self.c.messages.delete_many(in_folders)
        self.c.folders.delete_many({"mailbox": address})
        self.folders.forget(folder_ids)
        deleted = self.c.mailboxes.delete_one({"_id": address}).deleted_count == 1
        self._forget(address)
        self.blobs.release(blobs)
        return deleted


def _millis(value: datetime) -> datetime:
    """BSON dates have millisecond precision."""
    return value.replace(microsecond=value.microsecond // 1000 * 1000)
