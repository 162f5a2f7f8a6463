"""Page/limit query parameters shared by every list endpoint."""
from __future__ import annotations

from flask_restx import Namespace
from flask_restx.reqparse import RequestParser

PAGE_LIMIT_MAX = 500


def whole_number(value: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"must be a whole number, not {str(value)[:30]!r}") from None
    if number < 1:
        raise ValueError("must be 1 or more")
    return number


whole_number.__schema__ = {"type": "integer", "minimum": 1}  # type: ignore[attr-defined]


def paging_parser(ns: Namespace, default_limit: int) -> RequestParser:
    parser = ns.parser()
    parser.add_argument("page", type=whole_number, default=1, location="args", help="1 is the first page")
    parser.add_argument(
        "limit", type=whole_number, default=default_limit, location="args", help=f"items per page, at most {PAGE_LIMIT_MAX}"
    )
    return parser


def page_and_limit(args: dict, default_limit: int) -> tuple[int, int]:
    """Clamp the parsed values: page at least 1, limit within 1..PAGE_LIMIT_MAX."""
    page = max(1, args.get("page") or 1)
    limit = min(max(1, args.get("limit") or default_limit), PAGE_LIMIT_MAX)
    return page, limit
