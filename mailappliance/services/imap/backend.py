"""What IMAP sessions share: login, the stores, APPEND through the group-commit
writer, quota checks and change notification (services side of RFC 3501)."""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Optional

from bson import ObjectId

from mailappliance.protocol.envelope import Peer
from mailappliance.protocol.imap.session import Refused
from mailappliance.services.auth import Authenticator
from mailappliance.services.imap.account import ImapAccount
from mailappliance.services.imap.index import FolderIndex
from mailappliance.services.imap.login import LoginGuard
from mailappliance.services.imap.watch import FolderWatch
from mailappliance.services.mime import summarize
from mailappliance.storage.blobs import BlobStore
from mailappliance.storage.folders import FolderStore
from mailappliance.storage.mailboxes import MailboxStore
from mailappliance.storage.messages import MessageStore
from mailappliance.storage.writer import DeliveryWriter, MessageUnstorable, WriteFailed, WriteRequest

log = logging.getLogger("mailappliance.imap")

SEEN = "\\Seen"


class ImapBackend:
    def __init__(
        self,
        mailboxes: MailboxStore,
        folders: FolderStore,
        blobs: BlobStore,
        writer: DeliveryWriter,
        authenticator: Authenticator,
        default_quota: int = 0,
        exempt_ip: Callable[[str], bool] = lambda ip: False,
    ) -> None:
        self.mailboxes = mailboxes
        self.folders = folders
        self.blobs = blobs
        self.messages = MessageStore(folders.c, folders, blobs)
        self.index = FolderIndex(self.messages)
        self.writer = writer
        self.authenticator = authenticator
        self.default_quota = default_quota
        self.exempt_ip = exempt_ip
        self.guard = LoginGuard()
        self.watch = FolderWatch(lambda ids: folders.several(ids, {"uidnext": 1, "highestmodseq": 1, "pending": 1}))
        self.sessions = 0
        writer.listeners.append(self.notify)

    def start(self) -> None:
        self.watch.start()

    def stop(self) -> None:
        self.watch.stop()

    # ------------------------------------------------------------------ login
    def login(self, username: str, password: str, peer: Peer) -> Optional[ImapAccount]:
        """RFC 3501 §6.2.3; refused for a while after too many failures (login.py)."""
        address = username.strip().lower()
        exempt = self.exempt_ip(peer.ip)
        reason = self.guard.locked(address, peer.ip, exempt)
        if reason is not None:
            log.warning("imap login refused: user=<%s> client=[%s]: %s", address, peer.ip, reason)
            raise Refused(f"Login temporarily refused: {reason}", "UNAVAILABLE")
        mailbox = self.authenticator.authenticate(address, password)
        if mailbox is None:
            self.guard.failed(address, peer.ip, exempt)
            log.warning("imap authentication failed: user=<%s> client=[%s]", address, peer.ip)
            return None
        self.guard.succeeded(address)
        self.sessions += 1
        return ImapAccount(self, mailbox)

    def logged_out(self, account: ImapAccount) -> None:
        self.sessions -= 1

    # ------------------------------------------------------------------ changes
    def notify(self, folder_ids) -> None:
        self.watch.changed(folder_ids)

    # ------------------------------------------------------------------ APPEND
    def check_quota(self, address: str, size: int) -> None:
        mailbox = self.mailboxes.get(address)
        quota = (mailbox or {}).get("quota") or self.default_quota
        if quota and self.folders.usage([address]).get(address, 0) + size > quota:
            raise Refused("Mailbox is full", "OVERQUOTA")

    def append(self, address: str, folder: dict, raw: bytes, flags: list[str], when: datetime) -> int:
        """Store one message through the group-commit writer; returns its UID."""
        summary = summarize(raw)
        blob_id = ObjectId()
        message = {
            "_id": ObjectId(),
            "mailbox": address,
            "folder": folder["_id"],
            "flags": list(dict.fromkeys(flags)),
            "internal_date": when,
            "size": len(raw),
            "blob": blob_id,
            **summary.message_fields(),
        }
        request = WriteRequest(received_at=when, blobs=[(blob_id, raw, 1)], messages=[message])
        try:
            self.writer.submit(request)
        except MessageUnstorable as exc:
            raise Refused(f"Message cannot be stored: {exc}", "CANNOT") from None
        except WriteFailed as exc:
            raise Refused(f"Message not stored, try again: {exc}", "UNAVAILABLE") from None
        if request.dropped or "uid" not in message:
            raise Refused("The folder was deleted", "TRYCREATE")
        return message["uid"]
