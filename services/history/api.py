"""``GET /api/history/{room_id}`` and ``GET /api/search`` (API.md, "History").

History query: ``before=<message id>``, ``after=<message id>`` or ``around=<message id>`` (at
most one), ``limit`` 1..200 (default 50). Answer: ``{"messages":[message], "has_more": bool}``,
oldest first, ordered by (``sent_at``, ``id``). ``has_more`` says whether more messages lie
beyond the page in the direction of travel: older ones for ``before`` and for no cursor, newer
ones for ``after``. ``around``: the page centred on that message (``(limit - 1) // 2`` older
ones, the message, the rest newer; a short side gives its room to the other), ``has_more`` for
older messages before it and ``has_more_after`` for newer ones after it.

Search query (services/history/search.py): ``q`` (1..200 characters with at least one word,
at most 10 words), ``room=<id>`` (optional: only that room), ``before=<message id>`` (the last
result of the previous page), ``limit`` 1..50 (default 20). Answer: ``{"messages":[message],
"has_more": bool}``, newest first. Errors: 422 ``invalid_request`` (``q`` missing, empty, too
long or without a word; a malformed ``room``, ``before`` or ``limit``); 404 ``room_not_found``
(``room`` is not one of the caller's rooms: as for history, no existence leak); 404
``message_not_found`` (``before`` is not a message of the rooms searched).

Errors (``{"error":{"code","message"}}``):

- 401 ``invalid_token`` (missing, bad, expired or revoked token; ``WWW-Authenticate: Bearer``);
- 422 ``invalid_request``: ``limit`` not an integer in 1..200, an empty or malformed cursor, a
  repeated parameter, or both ``before`` and ``after``;
- 404 ``room_not_found``: the room does not exist or the caller is not a member (no leak);
- 404 ``message_not_found``: the ``before``/``after`` message is not in this room (yet): e.g. a
  live message the writer has not committed; a client resuming waits for its ``synced`` frame;
- 503 ``unavailable`` (with ``Retry-After``) while the database cannot be reached.

The token is checked locally (signature, claims, the process's revocation set): no database
query for it. Membership, the cursor and the page are three indexed lookups on one connection,
in a worker thread.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.settings import Settings
from services.common.tokens import AccessClaims, RevocationSet, TokenError, verify_access
from services.history import search as searching
from services.history.queries import CursorNotFound, NotMember, fetch_around, fetch_page
from services.history.searchtext import QueryError, parse_query

log = logging.getLogger("chat.history.api")

LIMIT_DEFAULT = 50
LIMIT_MAX = 200
_LIMIT_RE = re.compile(r"[0-9]{1,4}")
_CURSOR_RE = re.compile(r"[0-9A-Za-z_-]{1,64}")
_ROOM_MAX = 26
_METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


class APIError(Exception):
    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


def json_response(
    content: Any, status: int = 200, headers: dict[str, str] | None = None
) -> Response:
    return Response(
        orjson.dumps(content),
        status_code=status,
        media_type="application/json",
        headers={"Cache-Control": "no-store", **(headers or {})},
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    return json_response({"error": {"code": code, "message": message}}, status, headers)


def _invalid(message: str) -> APIError:
    return APIError(422, "invalid_request", message)


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def _one(request: Request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise _invalid(f"{name} may be given once")
    return values[0] if values else None


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return LIMIT_DEFAULT
    if not _LIMIT_RE.fullmatch(raw) or not 1 <= int(raw) <= LIMIT_MAX:
        raise _invalid(f"limit must be an integer from 1 to {LIMIT_MAX}")
    return int(raw)


def parse_search_limit(raw: str | None) -> int:
    if raw is None:
        return searching.LIMIT_DEFAULT
    if not _LIMIT_RE.fullmatch(raw) or not 1 <= int(raw) <= searching.LIMIT_MAX:
        raise _invalid(f"limit must be an integer from 1 to {searching.LIMIT_MAX}")
    return int(raw)


def parse_cursor(name: str, raw: str | None) -> str | None:
    if raw is None:
        return None
    if not _CURSOR_RE.fullmatch(raw):
        raise _invalid(f"{name} must be a message id")
    return raw


class HistoryAPI:
    def __init__(self, settings: Settings, engine: Engine, revoked: RevocationSet) -> None:
        self.settings = settings
        self.engine = engine
        self.revoked = revoked
        # every method reaches the endpoint, so a wrong one gets a JSON 405 in any host app
        self.routes = [
            Route("/api/history/{room_id}", self.get_history, methods=_METHODS, name="history"),
            Route("/api/search", self.get_search, methods=_METHODS, name="search"),
        ]

    def authenticate(self, request: Request) -> AccessClaims:
        token = _bearer(request)
        if token is None:
            raise APIError(
                401,
                "invalid_token",
                "missing bearer token",
                {"WWW-Authenticate": 'Bearer realm="chat"'},
            )
        try:
            return verify_access(self.settings, token, self.revoked)
        except TokenError:
            raise APIError(
                401,
                "invalid_token",
                "the access token is invalid, expired or revoked",
                {"WWW-Authenticate": 'Bearer realm="chat", error="invalid_token"'},
            ) from None

    async def get_history(self, request: Request) -> Response:
        return await self._answer(request, self._history, "history", "this room")

    async def get_search(self, request: Request) -> Response:
        return await self._answer(request, self._search, "search", "these rooms")

    async def _answer(
        self,
        request: Request,
        read: Callable[[Request], Awaitable[Response]],
        what: str,
        scope: str,
    ) -> Response:
        """``read``'s answer, or the error every read call answers the same way."""
        if request.method not in ("GET", "HEAD"):
            return error_response(405, "method_not_allowed", "use GET", {"Allow": "GET, HEAD"})
        try:
            return await read(request)
        except APIError as exc:
            return error_response(exc.status, exc.code, exc.message, exc.headers)
        except NotMember:
            return error_response(404, "room_not_found", "no such room")
        except CursorNotFound:
            return error_response(404, "message_not_found", f"no such message in {scope}")
        except SQLAlchemyError as exc:
            log.warning("%s read failed: %s", what, str(exc).splitlines()[0][:200])
            return error_response(
                503, "unavailable", f"{what} is unavailable, try again", {"Retry-After": "1"}
            )

    async def _history(self, request: Request) -> Response:
        claims = self.authenticate(request)
        before = parse_cursor("before", _one(request, "before"))
        after = parse_cursor("after", _one(request, "after"))
        around = parse_cursor("around", _one(request, "around"))
        limit = parse_limit(_one(request, "limit"))
        if sum(c is not None for c in (before, after, around)) > 1:
            raise _invalid("give one of before, after and around")
        room_id = request.path_params["room_id"]
        if not 0 < len(room_id) <= _ROOM_MAX:
            raise NotMember(room_id)
        if around is not None:
            page = await asyncio.to_thread(
                fetch_around, self.engine, claims.user_id, room_id, around, limit
            )
        else:
            page = await asyncio.to_thread(
                fetch_page,
                self.engine,
                claims.user_id,
                room_id,
                before=before,
                after=after,
                limit=limit,
            )
        answer: dict[str, Any] = {"messages": page.messages, "has_more": page.has_more}
        if page.has_more_after is not None:
            answer["has_more_after"] = page.has_more_after
        return json_response(answer)

    async def _search(self, request: Request) -> Response:
        claims = self.authenticate(request)
        q = _one(request, "q")
        if q is None:
            raise _invalid("q is required")
        try:
            terms = parse_query(q)
        except QueryError as exc:
            raise _invalid(str(exc)) from None
        room = _one(request, "room")
        if room is not None and not (_CURSOR_RE.fullmatch(room) and len(room) <= _ROOM_MAX):
            raise _invalid("room must be a room id")
        before = parse_cursor("before", _one(request, "before"))
        limit = parse_search_limit(_one(request, "limit"))
        page = await asyncio.to_thread(
            searching.search,
            self.engine,
            claims.user_id,
            terms,
            room=room,
            before=before,
            limit=limit,
        )
        return json_response({"messages": page.messages, "has_more": page.has_more})
