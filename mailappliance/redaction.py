"""API keys out of log lines: the ``api_key`` query parameter, however it is spelled.

Werkzeug percent-decodes parameter names, so ``?api%5Fkey=KEY`` authenticates as well
as ``?api_key=KEY``; both spellings (any case) are replaced by ``***``. Used by the
appliance's own access log and by gunicorn's (no imports, so gunicorn's master can load it).
"""
from __future__ import annotations

import re

API_KEY_IN_QUERY = re.compile(r"((?:^|[?&;])api(?:_|%5f)key=)[^&;\s\"]*", re.IGNORECASE)


def redact_api_key(text: str) -> str:
    return API_KEY_IN_QUERY.sub(r"\1***", text)


def mentions_api_key(text: str) -> bool:
    lowered = text.lower()
    return "api_key=" in lowered or "api%5fkey=" in lowered
