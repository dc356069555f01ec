"""Input rules of API.md: usernames, passwords, and JSON request bodies."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest

from services.auth.errors import APIError

USERNAME_RE = re.compile(r"[a-z0-9_.\-]{3,32}")
PASSWORD_MIN = 8
PASSWORD_MAX = 128


def canonical_username(value: object) -> str | None:
    """The canonical (lower case) form of a valid username, or None if it cannot be one."""
    if not isinstance(value, str) or not value.isascii():
        return None
    name = value.lower()
    return name if USERNAME_RE.fullmatch(name) else None


def normalize_password(value: object) -> str | None:
    """NFC-normalized password of 8-128 characters (any Unicode), or None."""
    if not isinstance(value, str) or len(value) > 4 * PASSWORD_MAX:
        return None
    password = unicodedata.normalize("NFC", value)
    if not PASSWORD_MIN <= len(password) <= PASSWORD_MAX:
        return None
    return password


def json_object() -> dict[str, Any]:
    """The request body as a JSON object: 415 if it is not JSON, 400 if it does not parse,
    422 if it is not an object."""
    mimetype = request.mimetype
    if mimetype and mimetype != "application/json" and not mimetype.endswith("+json"):
        raise APIError(415, "unsupported_media_type", "the request body must be application/json")
    raw = request.get_data(cache=True)
    if not raw:
        raise APIError(422, "invalid_request", "a JSON object body is required")
    try:
        data = request.get_json(force=True, silent=False)
    except BadRequest:  # undecodable or malformed JSON
        raise APIError(400, "invalid_json", "the request body is not valid JSON") from None
    if not isinstance(data, dict):
        raise APIError(422, "invalid_request", "the request body must be a JSON object")
    return data
