"""The browser's session: its refresh token in an ``HttpOnly`` cookie (docs/SECURITY.md,
"Browser sessions").

- ``chat_session=<refresh token>; HttpOnly; SameSite=Strict; Path=/api/auth/session`` (plus
  ``Secure`` when the request came over https, as told by a trusted proxy): no script can read
  it, no other site's request carries it, and only the two session calls receive it.
- Every call that sets or uses it must carry ``X-Chat-Session: cookie``: a header a cross-site
  form cannot send and a cross-origin ``fetch`` cannot send without a CORS preflight, which this
  service never grants (the CSRF guard). An ``Origin``, when the browser sends one, must be the
  page's own origin, or in ``CHAT_ALLOWED_ORIGINS`` when that is set.
"""

from __future__ import annotations

from flask import Response, request
from werkzeug.http import dump_cookie

from services.auth.errors import APIError
from services.auth.state import state

COOKIE = "chat_session"
COOKIE_PATH = "/api/auth/session"
HEADER = "X-Chat-Session"


def wanted() -> bool:
    """The request asks for (or speaks) the cookie session: ``X-Chat-Session: cookie``."""
    return request.headers.get(HEADER, "").strip().lower() == "cookie"


def check_origin() -> None:
    """403 for a browser request from another origin than the allowed ones."""
    origin = request.headers.get("Origin")
    if origin is None:
        return  # not a cross-origin browser request (browsers send Origin with every POST)
    allowed = state().settings.allowed_origins
    if allowed:  # an explicit allow-list is the whole truth (as the gateway's WebSocket check)
        ok = origin in allowed or "*" in allowed
    else:
        ok = origin in (f"http://{request.host}", f"https://{request.host}")
    if not ok:
        raise APIError(403, "forbidden", "requests from this origin are not allowed")


def guard() -> None:
    """The CSRF guard of the session calls: the header, then the origin."""
    if not wanted():
        raise APIError(403, "forbidden", f"this call needs the header '{HEADER}: cookie'")
    check_origin()


def token() -> str | None:
    return request.cookies.get(COOKIE) or None


def _cookie(value: str, max_age: int) -> str:
    return dump_cookie(
        COOKIE,
        value,
        max_age=max_age,
        path=COOKIE_PATH,
        secure=request.scheme == "https",
        httponly=True,
        samesite="Strict",
    )


def set_cookie(response: Response, refresh_token: str, max_age: int) -> Response:
    response.headers.add("Set-Cookie", _cookie(refresh_token, max(0, max_age)))
    return response


def clearing_header() -> dict[str, str]:
    """The ``Set-Cookie`` header that removes the cookie (for error answers too)."""
    return {"Set-Cookie": _cookie("", 0)}


def clear_cookie(response: Response) -> Response:
    response.headers.add("Set-Cookie", clearing_header()["Set-Cookie"])
    return response
