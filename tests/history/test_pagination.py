"""A 10,000-message room walked both ways, on SQLite and on MariaDB: no gap, no repeat, the
(sent_at, id) order, and every page one index range read (no OFFSET, no scan)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from sqlalchemy import insert, text
from sqlalchemy.engine import Engine
from starlette.applications import Starlette

from services.common.bus import Bus
from services.common.ids import iso_ms, new_id
from services.common.models import Message
from services.common.tokens import RevocationSet, issue_access
from services.history.queries import Cursor, page_query
from services.history.service import HistoryService
from services.history.store import history_engine
from tests.support import services as svc

from .helpers import add_room, settings

pytestmark = pytest.mark.anyio

N = 10_000
ROOM, NOISE = "r" + "p" * 25, "r" + "q" * 25
ALICE = "u" + "a" * 25


@pytest.fixture(params=svc.BACKENDS)
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[Engine]:
    if request.param == "sqlite":
        eng = request.getfixturevalue("sqlite_engine")
        yield eng
        return
    url = request.getfixturevalue("mysql_url")
    eng = history_engine(url)
    yield eng
    eng.dispose()


def fill(engine: Engine, room: str, n: int, seed: int) -> list[tuple[int, str]]:
    """n messages with many equal timestamps and random ids: the tie-break on id matters."""
    rnd = random.Random(seed)
    rows, keys = [], []
    for i in range(n):
        sent_ms = 1_750_000_000_000 + (i // 7) * 1000 + rnd.choice((0, 0, 0, 1))
        mid = "m" + "".join(rnd.choice("0123456789abcdefghjkmnpqrstvwxyz") for _ in range(25))
        keys.append((sent_ms, mid))
        rows.append(
            {
                "id": mid,
                "room_id": room,
                "sender_id": ALICE,
                "sender": "alice",
                "body": f"message {i}",
                "sent_ms": sent_ms,
                "client_msg_id": f"{room}-{i}",
                "written_ms": 0,
            }
        )
    rnd.shuffle(rows)  # insertion order is not history order
    with engine.begin() as conn:
        for k in range(0, n, 2000):
            conn.execute(insert(Message), rows[k : k + 2000])
    return sorted(keys)


@pytest.fixture
async def client(engine: Engine, memory_bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    add_room(engine, ROOM, [(ALICE, "alice")])
    add_room(engine, NOISE, [(ALICE, "alice")])
    service = HistoryService(settings(), memory_bus, engine, RevocationSet())
    app = Starlette(routes=service.routes)
    token, _ = issue_access(settings(), ALICE, "alice", new_id())
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app),
        base_url="http://t",
        headers={"Authorization": f"Bearer {token}"},
    ) as c:
        yield c


async def page(client: httpx.AsyncClient, query: str) -> tuple[list[dict[str, str]], bool]:
    resp = await client.get(f"/api/history/{ROOM}?{query}")
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    return doc["messages"], doc["has_more"]


async def test_walk_10000_messages_both_ways(client: httpx.AsyncClient, engine: Engine) -> None:
    expected = fill(engine, ROOM, N, seed=1)
    fill(engine, NOISE, 500, seed=2)  # another room interleaved in time: never shows up
    order = [mid for _, mid in expected]
    sent_at = {mid: iso_ms(ms) for ms, mid in expected}
    for limit in (200, 137):
        # backwards from the newest
        msgs, more = await page(client, f"limit={limit}")
        back = [m["id"] for m in msgs]
        pages = 1
        while more:
            msgs, more = await page(client, f"before={back[0]}&limit={limit}")
            assert msgs and len(msgs) <= limit
            back = [m["id"] for m in msgs] + back
            pages += 1
        assert back == order, "backward walk has a gap, a repeat or a wrong order"
        assert pages == -(-N // limit)
        # forwards from the oldest
        fwd = [order[0]]
        more = True
        while more:
            msgs, more = await page(client, f"after={fwd[-1]}&limit={limit}")
            assert len(msgs) <= limit
            assert all(m["room"] == ROOM and m["sent_at"] == sent_at[m["id"]] for m in msgs)
            fwd += [m["id"] for m in msgs]
        assert fwd == order, "forward walk has a gap, a repeat or a wrong order"


def plan(engine: Engine, direction: str, cursor: Cursor | None) -> str:
    q = page_query(engine.dialect.name, ROOM, direction, cursor, 50)  # type: ignore[arg-type]
    sql = str(q.compile(dialect=engine.dialect, compile_kwargs={"literal_binds": True}))
    assert " OFFSET " not in sql.upper() or sql.upper().rstrip().endswith("OFFSET 0")
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            return " | ".join(r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
        rows = conn.execute(text("EXPLAIN " + sql)).mappings().all()
        return " | ".join(f"{r['type']} key={r['key']} extra={r['Extra']}" for r in rows)


async def test_pages_are_index_range_reads(client: httpx.AsyncClient, engine: Engine) -> None:
    expected = fill(engine, ROOM, N, seed=3)
    fill(engine, NOISE, 3000, seed=4)
    mid_ms, mid_id = expected[N // 2]
    cursor = Cursor(mid_ms, mid_id)
    for direction, cur in (("latest", None), ("before", cursor), ("after", cursor)):
        text_plan = plan(engine, direction, cur)
        assert "ix_messages_room_time" in text_plan, text_plan
        assert "SCAN" not in text_plan and "TEMP B-TREE" not in text_plan, text_plan
        assert "filesort" not in text_plan and "ALL key" not in text_plan, text_plan
    if engine.dialect.name != "sqlite":
        # the handler counters prove it: a page in the middle of the room reads ~limit entries
        with engine.connect() as conn:
            for direction in ("before", "after"):
                q = page_query(engine.dialect.name, ROOM, direction, cursor, 50)  # type: ignore[arg-type]
                conn.execute(text("FLUSH STATUS"))
                assert len(conn.execute(q).all()) == 51
                status = dict(conn.execute(text("SHOW SESSION STATUS LIKE 'Handler_read%'")).all())
                reads = sum(int(v) for k, v in status.items() if k != "Handler_read_key")
                assert reads <= 60, (direction, status)


async def test_around_a_message(client: httpx.AsyncClient, engine: Engine) -> None:
    """``around=<id>``: the message in the middle of its page, older ones before it and newer
    ones after, a short side giving its room to the other, one flag each way; the pages on
    either side continue with ``before``/``after`` without a gap."""
    expected = fill(engine, ROOM, 300, seed=5)
    noise = fill(engine, NOISE, 100, seed=6)[0][1]
    order = [mid for _, mid in expected]

    async def around(i: int, limit: int) -> tuple[list[str], bool, bool]:
        resp = await client.get(f"/api/history/{ROOM}?around={order[i]}&limit={limit}")
        assert resp.status_code == 200, resp.text
        doc = resp.json()
        return [m["id"] for m in doc["messages"]], doc["has_more"], doc["has_more_after"]

    assert await around(150, 11) == (order[145:156], True, True)
    assert await around(150, 10) == (order[146:156], True, True)  # (10 - 1) // 2 older
    assert await around(150, 1) == ([order[150]], True, True)
    assert await around(0, 11) == (order[0:11], False, True)  # nothing older: all newer
    assert await around(2, 11) == (order[0:11], False, True)
    assert await around(299, 11) == (order[289:300], True, False)
    assert await around(296, 11) == (order[289:300], True, False)
    assert await around(150, 200) == (order[51:251], True, True)
    ids, _, _ = await around(150, 11)  # the next pages on either side join exactly
    older, _ = await page(client, f"before={ids[0]}&limit=5")
    newer, _ = await page(client, f"after={ids[-1]}&limit=5")
    assert [m["id"] for m in older] + ids + [m["id"] for m in newer] == order[140:161]
    for query, status, code in (
        (f"around={'m' + 'z' * 25}", 404, "message_not_found"),
        (f"around={order[1]}&before={order[5]}", 422, "invalid_request"),
        (f"around={order[1]}&after={order[5]}", 422, "invalid_request"),
        ("around=", 422, "invalid_request"),
    ):
        resp = await client.get(f"/api/history/{ROOM}?{query}")
        assert resp.status_code == status and resp.json()["error"]["code"] == code, query
    # another room's message is not "around" in this one
    resp = await client.get(f"/api/history/{ROOM}?around={noise}")
    assert resp.status_code == 404
    resp = await client.get(f"/api/history/{'r' + '9' * 25}?around={order[3]}")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "room_not_found"
