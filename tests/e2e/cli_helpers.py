"""Run the operator CLI and ``scripts/test-*`` as real processes against a live appliance.

The appliance runs in the test process (``appliance_factory``: free ports, ``ports.json``
in its DATA_DIR); the tools find it the way an operator's shell would: through
``DATA_DIR``, the environment and ``.env``. While a tool runs, the gevent-patched
``subprocess`` lets the appliance keep serving on the same hub.
"""
from __future__ import annotations

import imaplib
import os
import subprocess
import sys
from pathlib import Path
from typing import Optional

from tests.e2e.helpers import client_tls

ROOT = Path(__file__).resolve().parents[2]
# Settings that would point the tools somewhere else than the appliance under test.
_FOREIGN = ("SMTP_", "LMTP_", "IMAP_", "MONGODB_", "API_", "MAILBOX_API", "TLS_")


def tool_env(app, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_FOREIGN) and k not in ("DATA_DIR", "HOST", "DOTENV_PATH")}
    env.update(
        DATA_DIR=str(app.settings.data_dir),
        DOTENV_PATH=str(app.settings.data_dir.parent / "no.env"),
        PYTHONPATH=str(ROOT),
        MAILBOX_API_KEY=app.api_key,
        PYTHON=sys.executable,
    )
    env.update(extra)
    return {k: v for k, v in env.items() if v is not None}


def _run_tool(app, command: list[str], input: Optional[str], env: Optional[dict], timeout: float) -> subprocess.CompletedProcess:
    """Run ``command`` the way an operator would next to ``app``: from beside its DATA_DIR,
    with :func:`tool_env` unless ``env`` is given, standard input ``input`` (else empty)."""
    return subprocess.run(
        command,
        input=input if input is not None else "",
        env=env if env is not None else tool_env(app),
        cwd=app.settings.data_dir.parent,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_cli(app, *args: str, input: Optional[str] = None, env: Optional[dict] = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return _run_tool(app, [sys.executable, "-m", "mailappliance", *args], input, env, timeout)


def run_script(app, name: str, *args: str, input: Optional[str] = None, env: Optional[dict] = None, timeout: float = 90) -> subprocess.CompletedProcess:
    return _run_tool(app, [str(ROOT / "scripts" / name), *args], input, env, timeout)


def imap_login(app, user: str, password: str) -> bool:
    """True when IMAPS accepts the login (a real client, the appliance's certificate trusted)."""
    with imaplib.IMAP4_SSL("127.0.0.1", app.ports["imaps"], ssl_context=client_tls(app), timeout=10) as imap:
        try:
            imap.login(user, password)
        except imaplib.IMAP4.error:
            return False
        imap.logout()
        return True
