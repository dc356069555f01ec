"""Read state over the WebSocket (issue 16), one body for both run modes (in the scaled mode
the user's two connections are on two different gateways):

- the ``read`` frame moves the position forwards only and reaches the user's other connections
  (another gateway, another device), never the one that sent it;
- ``ready`` carries ``last_read``, ``unread`` and ``muted``: unread counts survive a reconnect
  (a reload, a new login) and are cleared by a read from another device (REST);
- unread is capped at 1000; a non-member's or a foreign message's read is refused;
- mute reaches every connection; logging out through the session cookie closes the sockets.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from typing import Any

import httpx
from sqlalchemy import insert, update

from services.common.db import make_engine
from services.common.models import Message, Room
from tests.support.client import (
    PASSWORD,
    Stack,
    User,
    WsClient,
    history,
    register_and_login,
    wait_for,
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def group(stack: Stack, owner: User, members: list[str]) -> str:
    with stack.http() as http:
        r = http.post(
            stack.url("/api/rooms"),
            json={"name": "reads", "members": members},
            headers=owner.headers,
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


def in_history(stack: Stack, user: User, room: str, n: int) -> list[dict[str, Any]]:
    """Wait until history holds n text messages of the room (unread is counted from them; the
    group's notices are not counted)."""

    def enough() -> list[dict[str, Any]] | None:
        msgs = history(stack, user, room, limit=200).json()["messages"]
        texts = [m for m in msgs if m["kind"] == "text"]
        return texts if len(texts) >= n else None

    return list(wait_for(enough, 20))


def room_in(ready: dict[str, Any], room: str) -> dict[str, Any]:
    return next(r for r in ready["rooms"] if r["id"] == room)


async def no_frame_before_pong(c: WsClient, kind: str) -> None:
    """Nothing of ``kind`` is pending for ``c``: a ping's pong comes first."""
    await c.send({"type": "ping"})
    await c.expect(lambda f: f["type"] == "pong")
    stray = [f for f in c.unmatched if f["type"] == kind]
    assert not stray, stray


def test_read_frame_moves_forwards_and_reaches_the_other_connections(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        acks = [await a.send_message(f"m{i}", room=room) for i in range(5)]
        ids = [ack["message"]["id"] for ack in acks]
        in_history(stack, bob, room, 5)
        laptop = await WsClient.connect(stack, bob, gateway=0)
        phone = await WsClient.connect(stack, bob, gateway=1)  # another gateway when scaled
        state = room_in(laptop.ready, room)
        assert (state["last_read"], state["unread"], state["muted"]) == (None, 5, False)
        await laptop.send({"type": "read", "room": room, "message_id": ids[2]})
        got = await phone.expect(lambda f: f["type"] == "read")
        assert got == {"type": "read", "room": room, "message_id": ids[2]}
        await no_frame_before_pong(laptop, "read")  # not echoed to the sender
        # backwards: no effect, nothing sent; forwards again: the next frame says ids[4]
        await laptop.send({"type": "read", "room": room, "message_id": ids[0]})
        await phone.send({"type": "read", "room": room, "message_id": ids[4]})
        got = await laptop.expect(lambda f: f["type"] == "read")
        assert got["message_id"] == ids[4]
        await no_frame_before_pong(phone, "read")
        # a reload (a new connection) sees the furthest position
        again = await WsClient.connect(stack, bob, gateway=2)
        state = room_in(again.ready, room)
        assert (state["last_read"], state["unread"]) == (ids[4], 0)
        # alice's own state is separate: her room shows no unread of her own messages
        mine = await WsClient.connect(stack, alice)
        assert room_in(mine.ready, room)["unread"] == 0
        for c in (a, laptop, phone, again, mine):
            await c.close()

    run(scenario())


def test_a_burst_of_reads_ends_at_the_furthest(stack: Stack) -> None:
    """A client marking every arriving message read: the other connection hears only forward
    moves, in order, ending at the last one, and the stored position is the last one."""
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        ids = [(await a.send_message(f"b{i}", room=room))["message"]["id"] for i in range(15)]
        in_history(stack, bob, room, 15)
        one = await WsClient.connect(stack, bob, gateway=0)
        two = await WsClient.connect(stack, bob, gateway=1)
        for mid in ids:
            await one.send({"type": "read", "room": room, "message_id": mid})
        heard: list[str] = []
        while not heard or heard[-1] != ids[-1]:
            heard.append((await two.expect(lambda f: f["type"] == "read"))["message_id"])
        positions = [ids.index(m) for m in heard]
        assert positions == sorted(set(positions)), heard  # forwards only, never twice
        three = await WsClient.connect(stack, bob)
        assert room_in(three.ready, room)["last_read"] == ids[-1]
        for c in (a, one, two, three):
            await c.close()

    run(scenario())


def test_unread_survives_a_new_login_and_clears_from_another_device(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        ids = [
            (await a.send_message(f"while away {i}", room=room))["message"]["id"] for i in range(3)
        ]
        in_history(stack, bob, room, 3)
        # a new login (another session) sees what arrived while bob was away
        with stack.http() as http:
            r = http.post(
                stack.url("/api/auth/login"),
                json={"username": bob.username, "password": PASSWORD},
            )
        fresh = User(bob.username, bob.id, r.json()["access_token"], r.json()["refresh_token"])
        desk = await WsClient.connect(stack, fresh, gateway=1)
        assert room_in(desk.ready, room)["unread"] == 3
        with stack.http() as http:
            listed = http.get(stack.url("/api/rooms"), headers=bob.headers).json()["rooms"]
        assert next(x for x in listed if x["id"] == room)["unread"] == 3
        # read on the phone (REST): the desk hears it, and a reload shows 0
        with stack.http() as http:
            r = http.post(
                stack.url(f"/api/rooms/{room}/read"),
                json={"message_id": ids[-1]},
                headers=bob.headers,
            )
        assert r.status_code == 204, r.text
        got = await desk.expect(lambda f: f["type"] == "read")
        assert got == {"type": "read", "room": room, "message_id": ids[-1]}
        reload = await WsClient.connect(stack, fresh, gateway=2)
        assert (
            room_in(reload.ready, room)["unread"],
            room_in(reload.ready, room)["last_read"],
        ) == (
            0,
            ids[-1],
        )
        # and a message after that counts again
        await a.send_message("one more", room=room)
        in_history(stack, bob, room, 4)
        later = await WsClient.connect(stack, fresh)
        assert room_in(later.ready, room)["unread"] == 1
        for c in (a, desk, reload, later):
            await c.close()

    run(scenario())


def test_read_refusals(stack: Stack) -> None:
    alice, bob, eve = (register_and_login(stack) for _ in range(3))
    room = group(stack, alice, [bob.username])
    elsewhere = group(stack, alice, [eve.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        mid = (await a.send_message("hello", room=room))["message"]["id"]
        other = (await a.send_message("hi eve", room=elsewhere))["message"]["id"]
        e = await WsClient.connect(stack, eve)
        cases = [
            (e, {"type": "read", "room": room, "message_id": mid}, "room_not_found"),  # not in it
            (a, {"type": "read", "room": "0" * 26, "message_id": mid}, "room_not_found"),
            (a, {"type": "read", "room": room, "message_id": other}, "message_not_found"),
            (a, {"type": "read", "room": room, "message_id": "m" + "0" * 25}, "message_not_found"),
            (a, {"type": "read", "room": room, "message_id": "no such id"}, "message_not_found"),
            (a, {"type": "read", "room": room}, "invalid_frame"),
            (a, {"type": "read", "message_id": mid}, "invalid_frame"),
            (a, {"type": "read", "room": room, "message_id": 7}, "invalid_frame"),
        ]
        for client, frame, code in cases:
            await client.send(frame)
            err = await client.expect(lambda f: f["type"] == "error")
            assert err["code"] == code, (frame, err)
        # the connections stay open and work
        assert (await a.send_message("still here", room=room))["type"] == "ack"
        with stack.http() as http:
            r = http.post(
                stack.url(f"/api/rooms/{room}/read"), json={"message_id": mid}, headers=eve.headers
            )
        assert r.status_code == 404 and r.json()["error"]["code"] == "room_not_found"
        await a.close()
        await e.close()

    run(scenario())


def test_unread_is_capped_at_1000(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])
    # 1,003 messages, written the way the history writer writes them (a send each would take
    # the test a minute): rows and the room's last activity
    engine = make_engine(stack.extra["database_url"])
    counter = itertools.count()
    base = int(time.time() * 1000) + 1000
    rows = [
        {
            "id": "m" + uuid.uuid4().hex[:25],
            "room_id": room,
            "sender_id": alice.id,
            "sender": alice.username,
            "body": "bulk",
            "sent_ms": base + next(counter),
            "client_msg_id": uuid.uuid4().hex,
            "written_ms": base,
        }
        for _ in range(1003)
    ]
    try:
        with engine.begin() as conn:
            conn.execute(insert(Message), rows)
            conn.execute(
                update(Room).where(Room.id == room).values(last_activity_ms=rows[-1]["sent_ms"])
            )
    finally:
        engine.dispose()

    async def scenario() -> None:
        b = await WsClient.connect(stack, bob)
        assert room_in(b.ready, room)["unread"] == 1000
        await b.send({"type": "read", "room": room, "message_id": rows[9]["id"]})

        def settled() -> bool:  # the frame has no answer: wait for its write
            with stack.http() as http:
                r = http.get(stack.url(f"/api/rooms/{room}"), headers=bob.headers)
            return bool(r.json()["unread"] == 993)

        wait_for(settled, 10)
        await b.close()

    run(scenario())


def test_mute_reaches_every_connection(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])

    async def scenario() -> None:
        one = await WsClient.connect(stack, bob, gateway=0)
        two = await WsClient.connect(stack, bob, gateway=1)
        with stack.http() as http:
            r = http.put(
                stack.url(f"/api/rooms/{room}/mute"), json={"muted": True}, headers=bob.headers
            )
        assert r.status_code == 200 and r.json() == {"room": room, "muted": True}
        for c in (one, two):
            got = await c.expect(lambda f: f["type"] == "muted")
            assert got == {"type": "muted", "room": room, "muted": True}
        three = await WsClient.connect(stack, bob)
        assert room_in(three.ready, room)["muted"] is True
        a = await WsClient.connect(stack, alice)
        assert room_in(a.ready, room)["muted"] is False
        for c in (one, two, three, a):
            await c.close()

    run(scenario())


def test_cookie_logout_closes_the_sessions_sockets(stack: Stack) -> None:
    """The browser's logout (session cookie, no access token) ends the session everywhere:
    its sockets on every gateway close with 4001; another session of the user stays."""
    bob = register_and_login(stack)
    with httpx.Client(timeout=30) as browser:
        r = browser.post(
            stack.url("/api/auth/login"),
            json={"username": bob.username, "password": PASSWORD},
            headers={"X-Chat-Session": "cookie"},
        )
        assert r.status_code == 200, r.text
        cookie = r.cookies["chat_session"]
        tab = User(bob.username, bob.id, r.json()["access_token"], "")

        async def scenario() -> None:
            t1 = await WsClient.connect(stack, tab, gateway=0)
            t2 = await WsClient.connect(stack, tab, gateway=1)
            other = await WsClient.connect(stack, bob, gateway=2)
            out = await asyncio.to_thread(
                browser.post,
                stack.url("/api/auth/session/logout"),
                headers={"X-Chat-Session": "cookie", "Cookie": f"chat_session={cookie}"},
            )
            assert out.status_code == 204
            assert await t1.close_code() == 4001
            assert await t2.close_code() == 4001
            await other.send({"type": "ping"})
            assert (await other.expect(lambda f: f["type"] == "pong"))["type"] == "pong"
            await other.close()

        run(scenario())
        refused = browser.post(
            stack.url("/api/auth/session/refresh"),
            headers={"X-Chat-Session": "cookie", "Cookie": f"chat_session={cookie}"},
        )
        assert refused.status_code == 401
