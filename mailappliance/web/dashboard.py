"""The live dashboard at ``/`` on API_PORT: static files shipped in the package.

Loading the page needs no key; the page asks for it and sends it as ``x-api-key`` on
every ``/api`` call. Everything is served from this origin, so the Content-Security-Policy
allows ``'self'`` only: no inline script or style, nothing fetched from elsewhere.
"""
from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

STATIC_DIR = Path(__file__).with_name("dashboard")
STATIC_URL = "/dashboard"

CONTENT_SECURITY_POLICY = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self'",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def blueprint() -> Blueprint:
    """``/`` (the page) and ``/dashboard/<file>`` (its script and style sheet)."""
    bp = Blueprint("dashboard", __name__, static_folder=str(STATIC_DIR), static_url_path=STATIC_URL)

    @bp.get("/")
    def index() -> Response:
        response = send_from_directory(STATIC_DIR, "index.html")
        response.headers["Cache-Control"] = "no-cache"
        return response

    @bp.after_request
    def secure(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    return bp
