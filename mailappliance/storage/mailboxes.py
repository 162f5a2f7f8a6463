"""Accounts ("mailboxes" in the REST API) and their cascade delete.

A mailbox document's ``_id`` is its lower-cased address, so the lookup made for
every RCPT is one ``find_one`` by ``_id``; it also carries the INBOX folder id, the
quota and the bytes used, so that one read is all a delivery needs.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Iterable, Optional

from pymongo.errors import DuplicateKeyError

from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import INBOX, FolderStore
from mailappliance.storage.mongo import Collections

PUBLIC_FIELDS = {"password_hash": 0}


class MailboxExists(Exception):
    pass


class MailboxStore:
    def __init__(self, collections: Collections, folders: FolderStore, blobs: BlobStore) -> None:
        self.c = collections
        self.folders = folders
        self.blobs = blobs

    def create(self, address: str, password_hash: str, quota: int = 0) -> dict:
        """Create the account with its default folders (RFC 6154 special-use)."""
        now = datetime.now(timezone.utc)
        folder_docs = self.folders.default_documents(address)
        inbox = next(f["_id"] for f in folder_docs if f["name"] == INBOX)
        doc = {
            "_id": address,
            "address": address,
            "domain": address.rsplit("@", 1)[1],
            "password_hash": password_hash,
            "quota": quota,
            "used_bytes": 0,
            "inbox": inbox,
            "created_at": now,
            "updated_at": now,
        }
        try:
            self.c.mailboxes.insert_one(doc)
        except DuplicateKeyError:
            raise MailboxExists(address) from None
        try:
            self.c.folders.insert_many(folder_docs)
        except Exception:
            self.c.mailboxes.delete_one({"_id": address})
            raise
        return doc

    def get(self, address: str) -> Optional[dict]:
        return self.c.mailboxes.find_one({"_id": address})

    def list(self, skip: int = 0, limit: int = 100) -> list[dict]:
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
        return result.matched_count == 1

    def add_usage(self, usage: Iterable[tuple[str, int]]) -> None:
        from pymongo import UpdateOne

        ops = [UpdateOne({"_id": address}, {"$inc": {"used_bytes": size}}) for address, size in usage]
        if ops:
            self.c.mailboxes.bulk_write(ops, ordered=False)

    def delete(self, address: str) -> bool:
        """Delete the account, its folders, its messages, and bytes nobody else refers to."""
        if self.c.mailboxes.find_one({"_id": address}, {"_id": 1}) is None:
            return False
        blob_ids = self.c.messages.distinct("blob", {"mailbox": address})
        folder_ids = [f["_id"] for f in self.c.folders.find({"mailbox": address}, {"_id": 1})]
        self.c.messages.delete_many({"mailbox": address})
        self.c.folders.delete_many({"mailbox": address})
        self.folders.forget(folder_ids)
        deleted = self.c.mailboxes.delete_one({"_id": address}).deleted_count == 1
        self.blobs.delete_unreferenced(blob_ids)
        return deleted
