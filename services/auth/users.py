"""``/api/users``: look a user up by name (API.md "Auth and users")."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify
from sqlalchemy import select

from services.auth.bearer import authenticate
from services.auth.errors import APIError
from services.auth.extensions import db
from services.auth.validation import canonical_username
from services.common.models import User

bp = Blueprint("users", __name__, url_prefix="/api/users")


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
