"""Query parameters shared by the list endpoints: page/limit, date-times."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Optional

from flask_restx import Model, Namespace, fields
from flask_restx.reqparse import RequestParser

PAGE_LIMIT_MAX = 500
PAGE_MAX = 1_000_000  # (page - 1) * limit stays a 64-bit skip


# flask-restx answers a bad argument with "<its help> <the error>", so errors here are
# written as a parenthesis after the help text: "1 is the first page (must be 1 or more)".


def whole_number(value: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"(must be a whole number, not {str(value)[:30]!r})") from None
    if number < 1:
        raise ValueError("(must be 1 or more)")
    return number


whole_number.__schema__ = {"type": "integer", "minimum": 1}  # type: ignore[attr-defined]


def page_number(value: str) -> int:
    number = whole_number(value)
    if number > PAGE_MAX:
        raise ValueError(f"(must be at most {PAGE_MAX})")
    return number


page_number.__schema__ = {"type": "integer", "minimum": 1, "maximum": PAGE_MAX}  # type: ignore[attr-defined]


def paging_parser(ns: Namespace, default_limit: int) -> RequestParser:
    parser = ns.parser()
    parser.add_argument("page", type=page_number, default=1, location="args", help="1 is the first page")
    parser.add_argument(
        "limit", type=whole_number, default=default_limit, location="args", help=f"items per page, at most {PAGE_LIMIT_MAX}"
    )
    return parser


def page_model(ns: Namespace, name: str, item: Model) -> Model:
    """The declared shape of :func:`page_body` for one kind of item."""
    return ns.model(
        name,
        {
            "emails": fields.List(fields.Nested(item)),
            "total": fields.Integer,
            "page": fields.Integer,
            "limit": fields.Integer,
            "pages": fields.Integer,
        },
    )


def page_body(items: list, total: int, page: int, limit: int) -> dict:
    """The body every list endpoint answers: the items and where this page stands."""
    return {"emails": items, "total": total, "page": page, "limit": limit, "pages": -(-total // limit)}


def page_and_limit(args: dict, default_limit: int) -> tuple[int, int]:
    """Clamp the parsed values: page at least 1, limit within 1..PAGE_LIMIT_MAX."""
    page = max(1, args.get("page") or 1)
    limit = min(max(1, args.get("limit") or default_limit), PAGE_LIMIT_MAX)
    return page, limit


def iso_datetime(value: str) -> datetime:
    """An ISO 8601 / RFC 3339 date-time (``Z`` or an offset; none means UTC) or a date."""
    text = str(value).strip()
    try:
        parsed = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
    except ValueError:
        raise ValueError(f"must be an ISO 8601 date-time like 2024-05-01T12:00:00Z, not {text[:40]!r}") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=timezone.utc)
    try:
        return parsed.astimezone(timezone.utc)
    except OverflowError:  # year 1 east of UTC, year 9999 west of it
        return (datetime.min if parsed.year == 1 else datetime.max).replace(tzinfo=timezone.utc)


iso_datetime.__schema__ = {"type": "string", "format": "date-time"}  # type: ignore[attr-defined]


def add_date_range(parser: RequestParser, field: str) -> None:
    """``since`` (inclusive) and ``until`` (exclusive) on ``field``, as ISO 8601."""
    parser.add_argument("since", type=iso_datetime, location="args", help=f"{field} at or after (ISO 8601)")
    parser.add_argument("until", type=iso_datetime, location="args", help=f"{field} before (ISO 8601)")


def date_range(args: dict) -> tuple[Optional[datetime], Optional[datetime]]:
    """``since`` and ``until`` from parsed arguments; ValueError when since is after until."""
    since, until = args.get("since"), args.get("until")
    if since is not None and until is not None and since > until:
        raise ValueError("since is later than until")
    return since, until


def list_arguments(ns: Namespace, parser: RequestParser, default_limit: int) -> tuple[dict, int, int, Optional[datetime], Optional[datetime]]:
    """Parse a list request: its arguments, page, limit, since and until (400 when
    ``since`` is after ``until``)."""
    args = parser.parse_args()
    page, limit = page_and_limit(args, default_limit)
    try:
        since, until = date_range(args)
    except ValueError as exc:
        ns.abort(400, str(exc))
    return args, page, limit, since, until
