"""GET /api/search on SQLite (FTS5) and on MariaDB (InnoDB FULLTEXT), through the HTTP API:
Vietnamese with and without diacritics, newest first with exact pagination in each of the
planner's steps (recent messages, the rest read, the full-text index), only the rooms the
caller is in now, deleted messages never found, edited ones by their new text, bad input."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

import httpx
import pytest
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from services.common.bus import Bus
from services.common.ids import new_id, now_ms
from services.common.models import Membership
from services.common.tokens import RevocationSet, issue_access
from services.history import search as searching
from services.history import store
from services.history.searchtext import parse_query
from services.history.service import HistoryService
from services.history.wire import Change, Entry, Row, decode
from tests.support import services as svc

from .helpers import add_room, change_doc, history_engine_for, settings, single, wire

pytestmark = pytest.mark.anyio

ALICE, BOB, CAROL = ("u" + c * 25 for c in "abc")
ROOM_A, ROOM_B, ROOM_C = ("r" + c * 25 for c in "xyz")
DAY = 24 * 3600 * 1000


@pytest.fixture(params=svc.BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    with history_engine_for(request) as eng:
        add_room(eng, ROOM_A, [(ALICE, "alice"), (BOB, "bob")])
        add_room(eng, ROOM_B, [(ALICE, "alice")])
        add_room(eng, ROOM_C, [(CAROL, "carol")])
        yield eng


@pytest.fixture
async def client(engine: Engine, memory_bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    service = HistoryService(settings(), memory_bus, engine, RevocationSet())
    transport = httpx.ASGITransport(app=Starlette(routes=service.routes))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        yield c


class Auth(Mapping[str, str]):
    """A user's Authorization header, its token minted when a request reads it: a token minted
    at import would expire (15 minutes) before the test runs in a long suite."""

    def __init__(self, user_id: str, username: str) -> None:
        self.user_id, self.username = user_id, username

    def __getitem__(self, key: str) -> str:
        if key != "Authorization":
            raise KeyError(key)
        value, _ = issue_access(settings(), self.user_id, self.username, new_id())
        return f"Bearer {value}"

    def __iter__(self) -> Iterator[str]:
        return iter(("Authorization",))

    def __len__(self) -> int:
        return 1


A, B, C = Auth(ALICE, "alice"), Auth(BOB, "bob"), Auth(CAROL, "carol")
_seq = iter(range(10**9))


def msg(room: str, body: str, sent_ms: int, sender: str = ALICE) -> Row:
    key, raw, _ = wire(room, sender, f"s-{next(_seq)}", body=body, sent_ms=sent_ms)
    item = decode(raw, key)
    assert isinstance(item, Row)
    return item


def change(kind: str, m: Row, body: str | None = None) -> Change:
    key, raw = single(change_doc(kind, m.room_id, m.id, m.sender_id, f"c-{next(_seq)}", body=body))
    item = decode(raw, key)
    assert isinstance(item, Change)
    return item


def write(engine: Engine, *items: Entry) -> None:
    store.write_batch(engine, list(items))


async def find(client: httpx.AsyncClient, headers: Mapping[str, str], **params: Any) -> Any:
    resp = await client.get("/api/search", params=params, headers=headers)
    assert resp.status_code == 200, resp.text
    return resp.json()


async def ids(
    client: httpx.AsyncClient, headers: Mapping[str, str], q: str, **params: Any
) -> list[str]:
    return [m["id"] for m in (await find(client, headers, q=q, **params))["messages"]]


async def test_vietnamese_with_and_without_diacritics(
    client: httpx.AsyncClient, engine: Engine
) -> None:
    now = now_ms()
    hello = msg(ROOM_A, "Xin chào các bạn", now - 1000)
    go = msg(ROOM_A, "Chúng ta đi ăn phở ở Đà Nẵng nhé", now - 2000)
    other = msg(ROOM_A, "engineering on dinh street", now - 3000)
    write(engine, hello, go, other)
    assert await ids(client, A, "chào") == [hello.id]  # the issue's case
    page = await find(client, B, q="chào")
    assert page["messages"][0]["body"] == "Xin chào các bạn" and page["has_more"] is False
    assert await ids(client, A, "CHÀO các") == [hello.id]  # case, several words (all needed)
    assert await ids(client, A, "bạn") == [hello.id]
    # without diacritics too (folded on both sides)
    assert await ids(client, A, "chao") == [hello.id]
    assert await ids(client, A, "xin chao cac ban") == [hello.id]
    assert await ids(client, A, "đà nẵng") == [go.id]
    assert await ids(client, A, "da nang") == [go.id]
    # two-letter words (under InnoDB's minimum token size) are found, and exactly
    assert await ids(client, A, "đi") == [go.id]
    assert await ids(client, A, "di ăn") == [go.id]
    assert await ids(client, A, "ăn xin") == []  # all words required
    assert await ids(client, A, "phở!") == [go.id]  # punctuation is no part of a word
    assert await ids(client, A, "dinh") == [other.id]
    # a word of 3 letters or more also finds the words it begins
    chaos = msg(ROOM_A, "Chaos engineering", now - 500)
    write(engine, chaos)
    assert await ids(client, A, "chào") == [chaos.id, hello.id]
    assert await ids(client, A, "engin") == [chaos.id, other.id]


async def test_operators_in_q_are_plain_words(client: httpx.AsyncClient, engine: Engine) -> None:
    now = now_ms()
    m = msg(ROOM_A, "NEAR the foo bar (baz) AND OR NOT", now - 10)
    write(engine, m)
    for q in (
        '+"foo" -bar* (baz) ~x @2 NEAR AND OR NOT',
        'foo" OR "bar',
        "foo*",
        "-foo",
        "bar^2 col:foo",
        "'; DROP TABLE messages; --",
        "NEAR(foo bar, 2)",
    ):
        resp = await client.get("/api/search", params={"q": q}, headers=A)
        assert resp.status_code == 200, (q, resp.text)
    assert await ids(client, A, '+"foo" (baz) NEAR AND OR NOT') == [m.id]
    assert await ids(client, A, "-foo") == [m.id]  # "-" is no operator: the word foo


def paced(engine: Engine, n: int, start: int, step: int, body: str, rooms: list[str]) -> list[Row]:
    """n messages ``step`` ms apart from ``start`` backwards, some sharing a timestamp (the id
    breaks the tie), round-robin over ``rooms``."""
    rows = [msg(rooms[i % len(rooms)], f"{body} {i}", start - (i // 2) * step) for i in range(n)]
    write(engine, *rows)
    return rows


def newest_first(rows: list[Row]) -> list[str]:
    return [r.id for r in sorted(rows, key=lambda r: (r.sent_ms, r.id), reverse=True)]


async def walk(client: httpx.AsyncClient, q: str, limit: int, **params: Any) -> list[str]:
    seen: list[str] = []
    before: str | None = None
    for _ in range(100):
        page = await find(
            client, A, q=q, limit=limit, **params, **({"before": before} if before else {})
        )
        got = [m["id"] for m in page["messages"]]
        assert len(got) == limit or not page["has_more"]
        seen += got
        if not page["has_more"]:
            return seen
        before = got[-1]
    raise AssertionError("no end")


PLANS = {  # (RECENT_DOCS, RECENT_MAX, ROOMS_MAX): which steps of the planner answer
    "recent": (5000, 50_000, 5000),  # all documents are among the newest 5000
    "more_recent": (8, 10**6, 0),  # the newest 8 hold a few: their density says how far to read
    "rooms": (8, 8, 10**6),  # the same, read room by room over the time that should hold them
    "full_text": (1, 1, 0),  # the rest comes from the full-text index
}


def plan_for(monkeypatch: pytest.MonkeyPatch, plan: str) -> None:
    for name, value in zip(("RECENT_DOCS", "RECENT_MAX", "ROOMS_MAX"), PLANS[plan], strict=True):
        monkeypatch.setattr(searching, name, value)


@pytest.mark.parametrize("plan", list(PLANS))
async def test_newest_first_and_pagination_in_every_step(
    client: httpx.AsyncClient, engine: Engine, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same results, exactly in (sent_at, id) order, page after page, whichever step of
    the planner answers: the newest documents, more of them, or the full-text index."""
    plan_for(monkeypatch, plan)
    now = now_ms()
    rows = paced(engine, 23, now - 1000, 20 * 60 * 1000, "quarterly report", [ROOM_A, ROOM_B])
    rows += paced(engine, 6, now - 90 * DAY, DAY, "old report", [ROOM_A])
    noise = paced(engine, 10, now - 500, 1000, "unrelated chatter", [ROOM_A])
    hidden = paced(engine, 5, now - 700, 1000, "quarterly report", [ROOM_C])  # not alice's
    got = await walk(client, "report", 4)
    assert got == newest_first(rows)
    assert not set(got) & {r.id for r in noise + hidden}
    assert await walk(client, "quarterly rep", 50) == newest_first(rows[:23])
    only_b = await walk(client, "report", 5, room=ROOM_B)
    assert only_b == newest_first([r for r in rows if r.room_id == ROOM_B])
    page = searching.search(engine, ALICE, parse_query("report"), limit=4)
    assert any(step.startswith(plan) for step in page.steps), page.steps


async def test_only_rooms_the_caller_is_in_now(client: httpx.AsyncClient, engine: Engine) -> None:
    now = now_ms()
    a = msg(ROOM_A, "launch plan for the rocket", now - 100)
    c = msg(ROOM_C, "launch plan b", now - 200, sender=CAROL)
    write(engine, a, c)
    assert await ids(client, B, "launch") == [a.id]
    assert await ids(client, C, "launch") == [c.id]
    with engine.begin() as conn:  # bob leaves room A
        conn.execute(
            delete(Membership).where(Membership.room_id == ROOM_A, Membership.user_id == BOB)
        )
    assert await ids(client, B, "launch") == []
    resp = await client.get("/api/search", params={"q": "launch", "room": ROOM_A}, headers=B)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "room_not_found"
    # a cursor from a room the caller left is no cursor
    resp = await client.get("/api/search", params={"q": "launch", "before": a.id}, headers=B)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "message_not_found"


@pytest.mark.parametrize("plan", ["recent", "full_text"])
async def test_deleted_never_found_and_edited_by_new_text(
    client: httpx.AsyncClient, engine: Engine, plan: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_for(monkeypatch, plan)
    now = now_ms()
    gone = msg(ROOM_A, "the password is hunter2", now - 300)
    fixed = msg(ROOM_A, "meeting at tuesday", now - 200)
    write(engine, gone, fixed)
    assert await ids(client, A, "hunter2") == [gone.id]
    write(engine, change("delete", gone), change("edit", fixed, "meeting at wednesday"))
    assert await ids(client, A, "hunter2") == []
    assert await ids(client, A, "password") == []
    assert await ids(client, A, "tuesday") == []
    found = (await find(client, A, q="wednesday"))["messages"]
    assert [m["id"] for m in found] == [fixed.id]
    assert found[0]["body"] == "meeting at wednesday" and found[0]["edited_at"] is not None
    assert found[0]["deleted"] is False and found[0]["kind"] == "text"


async def test_bad_requests(client: httpx.AsyncClient, engine: Engine) -> None:
    write(engine, msg(ROOM_A, "hello there", now_ms()))
    bad: list[dict[str, Any]] = [
        {},
        {"q": ""},
        {"q": "   "},
        {"q": "x" * 201},
        {"q": "!!! ??? 😀"},
        {"q": " ".join(f"w{i}" for i in range(11))},
        {"q": "hello", "limit": "0"},
        {"q": "hello", "limit": "51"},
        {"q": "hello", "limit": "ten"},
        {"q": "hello", "room": "../etc"},
        {"q": "hello", "room": "r" * 27},
        {"q": "hello", "before": "not an id!"},
    ]
    for params in bad:
        resp = await client.get("/api/search", params=params, headers=A)
        assert resp.status_code == 422, (params, resp.text)
        assert resp.json()["error"]["code"] == "invalid_request"
    resp = await client.get("/api/search?q=a&q=b", headers=A)
    assert resp.status_code == 422
    resp = await client.get("/api/search", params={"q": "hello", "room": ROOM_C}, headers=A)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "room_not_found"
    resp = await client.get("/api/search", params={"q": "hello", "before": "m" * 26}, headers=A)
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "message_not_found"
    resp = await client.get("/api/search", params={"q": "hello"})
    assert resp.status_code == 401
    resp = await client.post("/api/search", params={"q": "hello"}, headers=A)
    assert resp.status_code == 405
    long_ok = "x" * 200  # the limit itself is fine
    assert (await client.get("/api/search", params={"q": long_ok}, headers=A)).status_code == 200
