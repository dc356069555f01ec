"""Rooms of thousands, end to end in both modes: a 10,000-member group created in one call, a
member added and removed while many members are online, one message to all of them.

Users and their sessions are seeded straight into the database (tests/faults/seed.py: 10,000
password hashes through the API would take minutes); everything else goes through the public
API. The scaled half has 1,000 members online over 3 gateways, the all-in-one half 200.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest

from tests.faults.seed import Seeded, Seeder
from tests.support.client import Stack, User, WsClient, is_text

GROUP = 10_000
ONLINE = {"allinone": 200, "scaled": 1000}
FRAME_MAX = 300  # bytes of one membership frame, whatever the room's size


def server_ms(r: httpx.Response) -> float:
    m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
    assert m, r.headers
    return float(m.group(1))


def as_user(s: Seeded) -> User:
    return User(s.username, s.id, s.access_token, "")


async def connect_all(stack: Stack, users: list[Seeded]) -> list[WsClient]:
    sem = asyncio.Semaphore(50)

    async def one(i: int, u: Seeded) -> WsClient:
        async with sem:
            return await WsClient.connect(stack, as_user(u), gateway=i)

    return list(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))


async def frame_of(c: WsClient, pred: Any, timeout: float = 30.0) -> tuple[dict[str, Any], int]:
    """The first frame matching pred, and its size on the wire."""
    f = await c.expect(pred, timeout)
    import orjson

    return f, len(orjson.dumps(f))


def test_a_10000_member_group_created_changed_and_reached(stack: Stack) -> None:
    seeder = Seeder(stack.extra["database_url"], stack.extra["secret"])
    try:
        people = seeder.users(GROUP + 1, prefix="b")
    finally:
        seeder.close()
    owner, members, newcomer = people[0], people[1:GROUP], people[GROUP]  # 1 + 9,999
    online = [owner, *members[: ONLINE[stack.name] - 1]]
    timings: dict[str, float] = {}
    with httpx.Client(timeout=120) as http:
        r = http.post(
            stack.url("/api/rooms"),
            json={"name": "everyone", "members": [m.username for m in members]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text[:500]
        room = r.json()
        timings["create_ms"] = server_ms(r)
        assert room["member_count"] == GROUP and "members" not in room
        r = http.get(stack.url(f"/api/rooms/{room['id']}"), headers=members[-1].headers)
        assert r.status_code == 200 and r.json()["member_count"] == GROUP
        page = http.get(
            stack.url(f"/api/rooms/{room['id']}/members"),
            params={"limit": 1000},
            headers=owner.headers,
        ).json()
        assert len(page["members"]) == 1000 and page["next"] == page["members"][-1]["username"]
        names = [m["username"] for m in page["members"]]
        assert names == sorted(names)

    async def scenario() -> None:
        clients = await connect_all(stack, online)
        for c in clients:
            mine = [x for x in c.ready["rooms"] if x["id"] == room["id"]]
            assert mine and mine[0]["member_count"] == GROUP and "members" not in mine[0]
        leaver = members[-1]  # offline; removed to make room under the 10,000 cap
        async with httpx.AsyncClient(timeout=60) as http:
            r = await http.delete(
                stack.url(f"/api/rooms/{room['id']}/members/{leaver.username}"),
                headers=owner.headers,
            )
            assert r.status_code == 204, r.text
            timings["remove_ms"] = server_ms(r)
            left = await asyncio.gather(
                *(
                    frame_of(c, lambda f: f["type"] == "room" and f["event"] == "member_left")
                    for c in clients
                )
            )
            for f, size in left:
                assert f == {
                    "type": "room",
                    "event": "member_left",
                    "room": room["id"],
                    "username": leaver.username,
                    "member_count": GROUP - 1,
                }
                assert size <= FRAME_MAX
            r = await http.post(
                stack.url(f"/api/rooms/{room['id']}/members"),
                json={"username": newcomer.username},
                headers=owner.headers,
            )
            assert r.status_code == 200, r.text
            timings["add_ms"] = server_ms(r)
            assert r.json()["member_count"] == GROUP and "members" not in r.json()
            joined = await asyncio.gather(
                *(
                    frame_of(c, lambda f: f["type"] == "room" and f["event"] == "member_joined")
                    for c in clients
                )
            )
            for f, size in joined:
                assert f == {
                    "type": "room",
                    "event": "member_joined",
                    "room": room["id"],
                    "username": newcomer.username,
                    "member_count": GROUP,
                }
                assert size <= FRAME_MAX
            r = await http.post(  # full: the setting's cap holds
                stack.url(f"/api/rooms/{room['id']}/members"),
                json={"username": leaver.username},
                headers=owner.headers,
            )
            assert r.status_code == 422, r.text
        # one message reaches every online member, over every gateway
        cmid = str(uuid.uuid4())
        ack = await clients[0].send_message("hello everyone", room=room["id"], cmid=cmid)
        assert ack["type"] == "ack", ack
        got = await asyncio.gather(*(c.expect(is_text, 30) for c in clients[1:]))
        assert {f["message"]["id"] for f in got} == {ack["message"]["id"]}
        # nobody was disconnected, and nobody got the whole member list pushed
        for c in clients:
            assert c.ws.close_code is None
            assert not any(f["type"] == "room" and f.get("event") == "updated" for f in c.frames)
        await asyncio.gather(*(c.close() for c in clients))

    asyncio.run(scenario())
    print(f"big room ({stack.name}, {len(online)} online):", timings)
    # the server's own time for one change; a loose bound that catches a cost growing with
    # the room's size (the figures themselves are in docs/benchmarks, `make bench`)
    assert timings["add_ms"] < 1000 and timings["remove_ms"] < 1000, timings


@pytest.mark.parametrize("size", [101])
def test_a_group_over_100_gets_presence_by_subscription(stack: Stack, size: int) -> None:
    """Members of a big group are not each other's contacts: no presence unless asked for
    with presence_sub, which answers with one frame of the current state, then changes."""
    seeder = Seeder(stack.extra["database_url"], stack.extra["secret"])
    try:
        people = seeder.users(size, prefix="p")
    finally:
        seeder.close()
    owner, rest = people[0], people[1:]
    with httpx.Client(timeout=60) as http:
        r = http.post(
            stack.url("/api/rooms"),
            json={"name": "big", "members": [m.username for m in rest]},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text

    async def scenario() -> None:
        a = await WsClient.connect(stack, as_user(owner), gateway=0)
        b = await WsClient.connect(stack, as_user(rest[0]), gateway=1)
        with pytest.raises(AssertionError):  # not a contact: nothing said
            await a.expect(lambda f: f["type"] == "presence", timeout=1.0)
        await a.send({"type": "presence_sub", "users": [rest[0].username, rest[1].username]})
        f = await a.expect(lambda f: f["type"] == "presence")
        assert f == {
            "type": "presence",
            "changes": [
                {"username": rest[0].username, "online": True},
                {"username": rest[1].username, "online": False},
            ],
        }
        c = await WsClient.connect(stack, as_user(rest[1]), gateway=2)
        f = await a.expect(lambda f: f["type"] == "presence")
        assert f == {"type": "presence", "username": rest[1].username, "online": True}
        await b.close()
        f = await a.expect(lambda f: f["type"] == "presence", timeout=10)
        assert f == {"type": "presence", "username": rest[0].username, "online": False}
        await a.send({"type": "presence_sub", "users": ["x"]})
        err = await a.expect(lambda f: f["type"] == "error")
        assert err["code"] == "invalid_frame"
        await a.send({"type": "presence_sub", "users": [f"u{i:04d}" for i in range(501)]})
        err = await a.expect(lambda f: f["type"] == "error")
        assert err["code"] == "invalid_frame"
        for x in (a, c):
            await x.close()

    asyncio.run(scenario())
