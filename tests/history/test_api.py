"""GET /api/history/{room_id}: authentication, validation, membership, the message object."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from services.common.bus import Bus
from services.common.ids import iso_ms, new_id
from services.common.tokens import RevocationSet, issue_access
from services.history import store
from services.history.service import HistoryService

from .helpers import add_room, settings, wire

pytestmark = pytest.mark.anyio

ALICE, BOB, CAROL = ("u" + c * 25 for c in "abc")
ROOM, OTHER = "r" + "1" * 25, "r" + "2" * 25


@pytest.fixture
def service(sqlite_engine: Engine, memory_bus: Bus) -> HistoryService:
    add_room(sqlite_engine, ROOM, [(ALICE, "alice"), (BOB, "bob")])
    add_room(sqlite_engine, OTHER, [(CAROL, "carol")])
    return HistoryService(settings(), memory_bus, sqlite_engine, RevocationSet())


@pytest.fixture
async def client(service: HistoryService) -> AsyncIterator[httpx.AsyncClient]:
    app = Starlette(routes=service.routes)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


def token(user_id: str, username: str, sid: str | None = None) -> dict[str, str]:
    value, _ = issue_access(settings(), user_id, username, sid or new_id())
    return {"Authorization": f"Bearer {value}"}


def write(
    engine: Engine, room: str, sender_id: str, n: int, start_ms: int = 1_700_000_000_000
) -> list[str]:
    from services.history.wire import Row, decode

    rows = []
    for i in range(n):
        key, body, _ = wire(room, sender_id, f"api-{room}-{i}", body=f"m{i}", sent_ms=start_ms + i)
        item = decode(body, key)
        assert isinstance(item, Row)
        rows.append(item)
    store.write_batch(engine, rows)
    return [r.id for r in rows]


def assert_error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    body = resp.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]


async def test_message_object_and_order(client: httpx.AsyncClient, sqlite_engine: Engine) -> None:
    ids = write(sqlite_engine, ROOM, ALICE, 3)
    resp = await client.get(f"/api/history/{ROOM}", headers=token(BOB, "bob"))
    assert resp.status_code == 200
    doc = resp.json()
    assert doc["has_more"] is False
    assert [m["id"] for m in doc["messages"]] == ids
    first = doc["messages"][0]
    assert first == {
        "id": ids[0],
        "room": ROOM,
        "sender": "alice",
        "body": "m0",
        "sent_at": iso_ms(1_700_000_000_000),
        "client_msg_id": f"api-{ROOM}-0",
        "kind": "text",
        "edited_at": None,
        "deleted": False,
    }
    assert first["sent_at"] == "2023-11-14T22:13:20.000Z"


async def test_empty_room(client: httpx.AsyncClient) -> None:
    resp = await client.get(f"/api/history/{ROOM}", headers=token(ALICE, "alice"))
    assert resp.status_code == 200 and resp.json() == {"messages": [], "has_more": False}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
        {"Authorization": "Bearer not.a.jwt"},
        {"Authorization": "Bearer " + "x" * 5000},
    ],
)
async def test_bad_tokens_are_401(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    resp = await client.get(f"/api/history/{ROOM}", headers=headers)
    assert_error(resp, 401, "invalid_token")
    assert resp.headers["www-authenticate"].startswith("Bearer")


async def test_expired_and_foreign_tokens_are_401(client: httpx.AsyncClient) -> None:
    import jwt

    now = int(time.time())
    claims = {
        "iss": "chat",
        "aud": "chat",
        "sub": ALICE,
        "name": "alice",
        "sid": "s1",
        "typ": "access",
        "iat": now - 3600,
        "nbf": now - 3600,
        "exp": now - 1800,
        "jti": "j1",
    }
    expired = jwt.encode(claims, settings().jwt_secret, algorithm="HS256")
    claims["exp"] = now + 600
    forged = jwt.encode(claims, "another-secret-" + "y" * 40, algorithm="HS256")
    for tok in (expired, forged):
        resp = await client.get(f"/api/history/{ROOM}", headers={"Authorization": f"Bearer {tok}"})
        assert_error(resp, 401, "invalid_token")


async def test_revoked_session_is_401(client: httpx.AsyncClient, service: HistoryService) -> None:
    sid = new_id()
    headers = token(ALICE, "alice", sid)
    assert (await client.get(f"/api/history/{ROOM}", headers=headers)).status_code == 200
    service.api.revoked.add(sid, time.time() + 900)
    resp = await client.get(f"/api/history/{ROOM}", headers=headers)
    assert_error(resp, 401, "invalid_token")


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=201",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
        "limit=%205",
        "limit=99999999999999999999",
        "limit=10&limit=20",
        "before=",
        "after=",
        "before=../etc",
        "before=" + "a" * 65,
        "after=%00",
    ],
)
async def test_bad_parameters_are_422(client: httpx.AsyncClient, query: str) -> None:
    resp = await client.get(f"/api/history/{ROOM}?{query}", headers=token(ALICE, "alice"))
    assert_error(resp, 422, "invalid_request")


async def test_before_and_after_together_is_422(
    client: httpx.AsyncClient, sqlite_engine: Engine
) -> None:
    ids = write(sqlite_engine, ROOM, ALICE, 3)
    resp = await client.get(
        f"/api/history/{ROOM}?before={ids[2]}&after={ids[0]}", headers=token(ALICE, "alice")
    )
    assert_error(resp, 422, "invalid_request")


@pytest.mark.parametrize("room", [OTHER, "r" + "9" * 25, "nonexistent", "x" * 200])
async def test_non_members_and_unknown_rooms_are_404(
    client: httpx.AsyncClient, sqlite_engine: Engine, room: str
) -> None:
    write(sqlite_engine, OTHER, CAROL, 2)
    resp = await client.get(f"/api/history/{room}", headers=token(ALICE, "alice"))
    assert_error(resp, 404, "room_not_found")


async def test_unknown_cursor_is_404_message_not_found(
    client: httpx.AsyncClient, sqlite_engine: Engine
) -> None:
    write(sqlite_engine, ROOM, ALICE, 2)
    other_ids = write(sqlite_engine, OTHER, CAROL, 2)
    for query in ("before=m" + "0" * 25, f"after={other_ids[0]}"):  # unknown; another room's
        resp = await client.get(f"/api/history/{ROOM}?{query}", headers=token(ALICE, "alice"))
        assert_error(resp, 404, "message_not_found")


async def test_limit_and_has_more(client: httpx.AsyncClient, sqlite_engine: Engine) -> None:
    ids = write(sqlite_engine, ROOM, ALICE, 60)
    h = token(ALICE, "alice")
    latest = (await client.get(f"/api/history/{ROOM}", headers=h)).json()
    assert [m["id"] for m in latest["messages"]] == ids[10:] and latest["has_more"] is True
    one = (await client.get(f"/api/history/{ROOM}?limit=1", headers=h)).json()
    assert [m["id"] for m in one["messages"]] == ids[-1:] and one["has_more"] is True
    older = (await client.get(f"/api/history/{ROOM}?before={ids[10]}&limit=200", headers=h)).json()
    assert [m["id"] for m in older["messages"]] == ids[:10] and older["has_more"] is False
    newer = (await client.get(f"/api/history/{ROOM}?after={ids[49]}&limit=5", headers=h)).json()
    assert [m["id"] for m in newer["messages"]] == ids[50:55] and newer["has_more"] is True
    last = (await client.get(f"/api/history/{ROOM}?after={ids[54]}&limit=5", headers=h)).json()
    assert [m["id"] for m in last["messages"]] == ids[55:] and last["has_more"] is False
    none = (await client.get(f"/api/history/{ROOM}?after={ids[59]}", headers=h)).json()
    assert none == {"messages": [], "has_more": False}


async def test_other_methods_are_405_json(client: httpx.AsyncClient) -> None:
    resp = await client.post(f"/api/history/{ROOM}", headers=token(ALICE, "alice"))
    assert_error(resp, 405, "method_not_allowed")
