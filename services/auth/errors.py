"""JSON errors for everything: API errors, HTTP errors (404, 405, 400, 413, 415...) and bugs.

Every error body is ``{"error": {"code": "snake_case", "message": "text for a person"}}``.
A stack trace never reaches a client; a 500 ``internal_error`` means a real bug and is logged.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, jsonify
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from werkzeug.exceptions import HTTPException

log = logging.getLogger("chat.auth")

# HTTP errors raised by Flask/werkzeug itself, with the codes clients see.
HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    411: "length_required",
    413: "payload_too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    422: "invalid_request",
    429: "rate_limited",
    431: "headers_too_large",
}


class APIError(Exception):
    """An error with an HTTP status and an API error code (API.md)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.extra = extra or {}


def error_response(
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message}
    if extra:
        body.update(extra)
    response = jsonify({"error": body})
    response.status_code = status
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def unauthorized(code: str, message: str) -> APIError:
    return APIError(401, code, message, headers={"WWW-Authenticate": 'Bearer realm="chat"'})


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(APIError)
    def _api_error(exc: APIError) -> Response:
        return error_response(exc.status, exc.code, exc.message, exc.headers, exc.extra)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        status = exc.code or 500
        if status >= 500:
            log.error("http error %s", status)
            return error_response(status, "internal_error", "something went wrong on our side")
        headers: dict[str, str] = {}
        if status == 405:
            allow = exc.get_headers()
            headers = {k: v for k, v in allow if k.lower() == "allow"}
        code = HTTP_CODES.get(status, "bad_request")
        message = (exc.description or exc.name or code).strip()
        return error_response(status, code, message, headers)

    @app.errorhandler(OperationalError)
    @app.errorhandler(PoolTimeout)
    def _database_away(exc: Exception) -> Response:
        # the database is unreachable, or a lock wait/deadlock: not a bug, retry later
        log.warning("database unavailable: %s", type(exc).__name__)
        return error_response(
            503,
            "unavailable",
            "the service is busy or its database is away; retry shortly",
            {"Retry-After": "1"},
        )

    @app.errorhandler(Exception)
    def _bug(exc: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "something went wrong on our side")
