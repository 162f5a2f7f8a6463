"""gunicorn's access log without API keys (``config/gunicorn.conf.py`` uses it).

The key may come as ``?api_key=`` (request line, query, referer) or as the
``x-api-key`` header; both are replaced by ``***`` before a line is written.
Imports only gunicorn: it is loaded by gunicorn's master before any worker forks.
"""
from __future__ import annotations

from typing import Any

from gunicorn.glogging import Logger

from mailappliance.redaction import mentions_api_key, redact_api_key

KEY_ATOMS = ("{x-api-key}i", "{http_x_api_key}e")


redact = redact_api_key


class RedactingLogger(Logger):
    def atoms(self, resp: Any, req: Any, environ: dict, request_time: Any) -> dict:
        atoms = super().atoms(resp, req, environ, request_time)
        for name, value in atoms.items():
            if isinstance(value, str) and mentions_api_key(value):
                atoms[name] = redact(value)
        for name in KEY_ATOMS:
            if name in atoms:
                atoms[name] = "***"
        return atoms
