"""The API key check shared by both HTTP apps (header ``x-api-key`` or query ``api_key``)."""
from __future__ import annotations

import hmac

from flask import request

AUTHORIZATIONS = {
    "apikey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    "apikey_query": {"type": "apiKey", "in": "query", "name": "api_key"},
}


def presented_key() -> str:
    return request.headers.get("x-api-key") or request.args.get("api_key") or ""


def key_is_valid(expected: str) -> bool:
    given = presented_key()
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
