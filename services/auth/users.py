"""``/api/users``: look a user up by name, or find people by the start of their username
(API.md "Auth and users")."""

from __future__ import annotations

import re

from flask import Blueprint, Response, jsonify, request
from sqlalchemy import select

from services.auth.bearer import authenticate
from services.auth.errors import APIError
from services.auth.extensions import db
from services.auth.state import state
from services.auth.throttle import Reservation, reserve
from services.auth.validation import canonical_username
from services.common.models import User

bp = Blueprint("users", __name__, url_prefix="/api/users")

PREFIX_RE = re.compile(r"[a-z0-9_.\-]{3,32}")
LIMIT_RE = re.compile(r"[0-9]{1,2}")
MAX_RESULTS = 20
DEFAULT_RESULTS = 10


def like_prefix(prefix: str) -> str:
    """A LIKE pattern matching strings that start with ``prefix`` (wildcards escaped with
    ``\\``: ``_`` is a username character, and must not match any character)."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"


@bp.get("")
def search() -> Response:
    """Usernames starting with ``prefix`` (at least 3 characters), in order, at most
    ``limit`` (1-20, default 10). One range read of the unique index on ``username``."""
    claims = authenticate()
    raw = request.args.get("prefix", "")
    prefix = raw.lower() if raw.isascii() else ""
    if not PREFIX_RE.fullmatch(prefix):
        raise APIError(
            422,
            "invalid_request",
            "'prefix' must be 3-32 characters of a-z, 0-9, '_', '.', '-'",
        )
    raw_limit = request.args.get("limit", str(DEFAULT_RESULTS))
    if not LIMIT_RE.fullmatch(raw_limit) or not 1 <= int(raw_limit) <= MAX_RESULTS:
        raise APIError(
            422, "invalid_request", f"'limit' must be an integer from 1 to {MAX_RESULTS}"
        )
    st = state()
    held = reserve(db.session(), [(st.search_limit, claims.user_id)], st.clock())
    if not isinstance(held, Reservation):
        raise APIError(
            429,
            "rate_limited",
            "too many searches; try again in a moment",
            headers={"Retry-After": str(int(held))},
        )
    # Usernames are canonical lower case under a binary collation (utf8mb4_bin; SQLite's
    # BINARY): the range [prefix, prefix + U+10FFFF) is exactly "starts with prefix" and is what
    # both engines read on the unique index; the escaped LIKE states the same for any reader.
    rows = db.session.execute(
        select(User.id, User.username)
        .where(
            User.username >= prefix,
            User.username < prefix + "\U0010ffff",
            User.username.like(like_prefix(prefix), escape="\\"),
        )
        .order_by(User.username)
        .limit(int(raw_limit))
    ).all()
    return jsonify({"users": [{"id": r.id, "username": r.username} for r in rows]})


@bp.get("/<path:username>")
def get_user(username: str) -> Response:
    authenticate()
    name = canonical_username(username)
    user = None
    if name is not None:
        user = db.session.execute(select(User).where(User.username == name)).scalar_one_or_none()
    if user is None:
        raise APIError(404, "user_not_found", "no such user")
    return jsonify({"id": user.id, "username": user.username})
