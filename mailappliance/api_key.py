"""The API key both HTTP apps require: ``MAILBOX_API_KEY``, or a random one kept in
``DATA_DIR/api-key`` that the appliance and the gunicorn workers (``mailappliance.wsgi``)
share. Light imports only: gunicorn's master process reads it before forking workers."""
from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Optional

from mailappliance.settings import Settings

WEAK_API_KEYS = {"", "changeme"}
MIN_GENERATED_KEY_LENGTH = 16


def resolve_api_key(settings: Settings) -> tuple[str, Optional[Path]]:
    """The configured key, or the generated one kept in ``DATA_DIR/api-key`` (never a
    guessable one). Several processes starting at once agree on one key: the file is
    written aside and linked into place, which fails for all but the first."""
    if settings.mailbox_api_key not in WEAK_API_KEYS:
        return settings.mailbox_api_key, None
    path = settings.data_dir / "api-key"
    key = _read(path)
    if key is not None:
        return key, path
    if path.exists():  # too short or unreadable: replace it, as before
        path.unlink()
    key = secrets.token_urlsafe(32)
    aside = path.with_name(f".api-key.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(aside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    try:
        os.link(aside, path)
    except FileExistsError:
        key = _read(path) or key
    finally:
        aside.unlink()
    return key, path


def _read(path: Path) -> Optional[str]:
    try:
        key = path.read_text().strip()
    except OSError:
        return None
    return key if len(key) >= MIN_GENERATED_KEY_LENGTH else None
