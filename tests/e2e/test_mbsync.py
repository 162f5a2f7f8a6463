"""mbsync (Debian's isync) syncs an account with several folders to a Maildir and back."""
import imaplib
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PASSWORD, have

USER = "user@example.com"
pytestmark = pytest.mark.skipif(not have("mbsync"), reason="mbsync (isync) is not installed")


def message(subject: str) -> bytes:
    return f"From: s@example.com\r\nTo: {USER}\r\nSubject: {subject}\r\nMessage-ID: <{subject.replace(' ', '.')}@x>\r\n\r\nbody of {subject}\r\n".encode()


def rcfile(tmp_path: Path, port: int) -> Path:
    mail = tmp_path / "Mail"
    mail.mkdir(exist_ok=True)
    path = tmp_path / "mbsyncrc"
    path.write_text(
        f"""IMAPAccount a
Host 127.0.0.1
Port {port}
User {USER}
Pass "{PASSWORD}"
SSLType None
AuthMechs LOGIN

IMAPStore remote
Account a

MaildirStore local
Path {mail}/
Inbox {mail}/INBOX
SubFolders Verbatim

Channel c
Far :remote:
Near :local:
Patterns *
Create Both
Expunge Both
SyncState *
"""
    )
    return path


def mbsync(rc: Path) -> str:
    out = subprocess.run(["mbsync", "-c", str(rc), "c"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def maildir_files(root: Path, folder: str) -> list[Path]:
    base = root / "Mail" / folder
    return sorted(p for sub in ("cur", "new") for p in (base / sub).glob("*") if p.is_file())


def test_mbsync_round_trip(appliance_factory, tmp_path):
    app = appliance_factory(allow_plaintext_auth=True)
    app.admin.create(USER, PASSWORD)
    client = imaplib.IMAP4("127.0.0.1", app.ports["imap"], timeout=10)
    client.login(USER, PASSWORD)
    client.create("Projects/Alpha")
    for i in range(5):
        client.append("INBOX", None, None, message(f"inbox {i}"))
    for i in range(3):
        client.append("Projects/Alpha", "(\\Seen)", None, message(f"alpha {i}"))
    client.append("Sent", "(\\Seen)", None, message("sent 0"))

    rc = rcfile(tmp_path, app.ports["imap"])
    mbsync(rc)
    assert len(maildir_files(tmp_path, "INBOX")) == 5
    assert len(maildir_files(tmp_path, "Projects/Alpha")) == 3
    assert len(maildir_files(tmp_path, "Sent")) == 1
    # The content arrives intact (mbsync stores LF line ends and adds its X-TUID header).
    local = {re.sub(rb"X-TUID: \S+\n", b"", p.read_bytes()) for p in maildir_files(tmp_path, "INBOX")}
    assert message("inbox 0").replace(b"\r\n", b"\n") in local

    # Local changes: flag one message, delete another (Maildir flags in the file name).
    files = maildir_files(tmp_path, "INBOX")
    flagged = files[0]
    info = flagged.name.split(":2,")
    os.rename(flagged, flagged.parent.parent / "cur" / (info[0] + ":2," + "".join(sorted(set((info[1] if len(info) > 1 else "") + "F")))))
    files[1].unlink()
    # And a new local message in a new folder.
    newdir = tmp_path / "Mail" / "Local"
    for sub in ("cur", "new", "tmp"):
        (newdir / sub).mkdir(parents=True)
    (newdir / "new" / "1700000000.1.host").write_bytes(message("local one"))
    mbsync(rc)

    client.select("INBOX")
    assert client.search(None, "ALL")[1] == [b"1 2 3 4"]
    assert len(client.search(None, "FLAGGED")[1][0].split()) == 1
    typ, data = client.select("Local")
    assert typ == "OK" and data == [b"1"]

    # A second run changes nothing.
    before = {p.name for p in (tmp_path / "Mail").rglob("*") if p.is_file()}
    mbsync(rc)
    after = {p.name for p in (tmp_path / "Mail").rglob("*") if p.is_file()}
    assert before == after
    client.select("INBOX")
    assert client.search(None, "ALL")[1] == [b"1 2 3 4"]
    client.logout()
