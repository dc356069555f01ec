"""The WebSocket protocol of API.md, one body for both run modes."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import orjson
import pytest
import websockets

from services.gateway.sending import JOIN_WAIT
from tests.support.client import (
    Stack,
    WsClient,
    direct_room,
    history,
    is_text,
    register_and_login,
    uname,
    wait_for,
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def group(stack: Stack, owner, members: list[str], name: str = "team") -> dict:  # type: ignore[no-untyped-def]
    with stack.http() as http:
        r = http.post(
            stack.url("/api/rooms"), json={"name": name, "members": members}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        return dict(r.json())


def test_auth_deadline_bad_token_and_origin(stack: Stack) -> None:
    user = register_and_login(stack)

    async def scenario() -> None:
        # bad token -> 4001
        c = await WsClient.connect(stack, None)
        await c.send({"type": "auth", "token": "not-a-token"})
        assert await c.close_code() == 4001
        # first frame not auth -> 4001
        c = await WsClient.connect(stack, None)
        await c.send({"type": "ping"})
        assert await c.close_code() == 4001
        # a foreign or a missing Origin is refused with 403
        for origin in ("http://evil.example", None):
            with pytest.raises(websockets.InvalidStatus) as info:
                kwargs = {"origin": origin} if origin else {}
                await websockets.connect(stack.ws_url(), open_timeout=5, **kwargs)  # type: ignore[arg-type]
            assert info.value.response.status_code == 403
        # a good token -> ready with the user
        c = await WsClient.connect(stack, user)
        assert c.ready["user"] == {"id": user.id, "username": user.username}
        assert isinstance(c.ready["rooms"], list) and isinstance(c.ready["online"], list)
        await c.close()

    run(scenario())


def test_bad_frames_get_errors_and_the_connection_stays_open(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = direct_room(stack, alice, bob.username)
    outsider_room = direct_room(stack, bob, register_and_login(stack).username)

    async def scenario() -> None:
        c = await WsClient.connect(stack, alice)
        cases = [
            ("not json at all", "invalid_frame"),
            ("[1,2,3]", "invalid_frame"),
            ('{"type":"launch_missiles"}', "invalid_frame"),
            ('{"no_type":1}', "invalid_frame"),
            ('{"type":"send","room":"x","body":"hi"}', "invalid_frame"),  # no client_msg_id
        ]
        for raw, code in cases:
            await c.ws.send(raw)
            frame = await c.expect(lambda f: f["type"] == "error")
            assert frame["code"] == code, (raw, frame)
        checks = [
            ({"room": room["id"], "body": "   "}, "empty_body"),
            ({"room": room["id"], "body": "x" * 4001}, "body_too_long"),
            ({"room": room["id"], "body": 5}, "invalid_frame"),
            ({"room": outsider_room["id"], "body": "sneaky"}, "not_a_member"),
            ({"room": "0" * 26, "body": "guessed id"}, "not_a_member"),
            ({"room": "../../etc", "body": "x"}, "room_not_found"),
            ({"to": uname("ghost"), "body": "hello?"}, "user_not_found"),
            ({"room": room["id"], "to": bob.username, "body": "both"}, "invalid_frame"),
        ]
        for fields, code in checks:
            cmid = str(uuid.uuid4())
            await c.send({"type": "send", "client_msg_id": cmid, **fields})
            frame = await c.expect(lambda f, cmid=cmid: f.get("client_msg_id") == cmid)
            assert frame["type"] == "error" and frame["code"] == code, (fields, frame)
        await c.send({"type": "ping"})
        await c.expect(lambda f: f["type"] == "pong")
        ok = await c.send_message("still works", room=room["id"])
        assert ok["type"] == "ack" and ok["message"]["body"] == "still works"
        await c.close()

    run(scenario())
    # nothing of the rejected sends reached history
    msgs = wait_for(lambda: history(stack, alice, room["id"]).json()["messages"], timeout=10)
    assert [m["body"] for m in msgs] == ["still works"]
    assert history(stack, bob, outsider_room["id"]).json()["messages"] == []


def test_oversized_frame_closes_1009(stack: Stack) -> None:
    user = register_and_login(stack)

    async def scenario() -> None:
        c = await WsClient.connect(stack, user)
        await c.ws.send("x" * (64 * 1024 + 1))
        assert await c.close_code() == 1009

    run(scenario())


def test_retry_same_client_msg_id_is_one_message(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = direct_room(stack, alice, bob.username)

    async def scenario() -> None:
        a1 = await WsClient.connect(stack, alice, gateway=0)
        a2 = await WsClient.connect(stack, alice, gateway=1)
        b = await WsClient.connect(stack, bob, gateway=2)
        cmid = str(uuid.uuid4())
        first = await a1.send_message("once", room=room["id"], cmid=cmid)
        again = await a1.send_message("once", room=room["id"], cmid=cmid)
        assert first["type"] == again["type"] == "ack"
        assert again["message"] == first["message"]
        wait_for(lambda: history(stack, bob, room["id"]).json()["messages"], timeout=10)
        other = await a2.send_message("once", room=room["id"], cmid=cmid, retry=True)
        assert other["message"] == first["message"]  # the same ack on another gateway
        got = await b.expect(is_text)
        assert got["message"]["id"] == first["message"]["id"]
        with pytest.raises(AssertionError):  # and never a second live copy
            await b.expect(is_text, timeout=1.5)
        for c in (a1, a2, b):
            await c.close()
        return first["message"]

    msg = run(scenario())
    msgs = history(stack, bob, room["id"]).json()["messages"]
    assert [m["id"] for m in msgs] == [msg["id"]]


def test_group_message_reaches_every_connection_once_across_gateways(stack: Stack) -> None:
    owner = register_and_login(stack)
    members = [register_and_login(stack) for _ in range(5)]
    room = group(stack, owner, [m.username for m in members])
    everyone = [owner, *members]

    async def scenario() -> None:
        clients = [await WsClient.connect(stack, u, gateway=i) for i, u in enumerate(everyone)]
        extra = await WsClient.connect(stack, members[0], gateway=2)  # a second tab
        sent = []
        for i, c in enumerate(clients):
            ack = await c.send_message(f"from {i}", room=room["id"])
            assert ack["type"] == "ack", ack
            sent.append(ack["message"]["id"])
        for i, c in enumerate([*clients, extra]):
            expected = {m for j, m in enumerate(sent) if j != i or c is extra}
            got: list[str] = []
            while len(got) < len(expected):
                f = await c.expect(is_text)
                got.append(f["message"]["id"])
            assert sorted(got) == sorted(expected), f"client {i}"
        for c in [*clients, extra]:
            with pytest.raises(AssertionError):
                await c.expect(is_text, timeout=0.5)
            await c.close()

    run(scenario())


def test_typing_is_relayed_to_the_others(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = direct_room(stack, alice, bob.username)

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        await a.send({"type": "typing", "room": room["id"]})
        f = await b.expect(lambda f: f["type"] == "typing")
        assert f == {"type": "typing", "room": room["id"], "username": alice.username}
        await a.close()
        await b.close()

    run(scenario())


def test_membership_changes_apply_live(stack: Stack) -> None:
    owner, carol, dave = (register_and_login(stack) for _ in range(3))
    room = group(stack, owner, [dave.username])

    async def scenario() -> None:
        o = await WsClient.connect(stack, owner, gateway=0)
        c = await WsClient.connect(stack, carol, gateway=1)
        with httpx.Client(timeout=10) as http:
            r = http.post(
                stack.url(f"/api/rooms/{room['id']}/members"),
                json={"username": carol.username},
                headers=owner.headers,
            )
            assert r.status_code == 200, r.text
        joined = await c.expect(lambda f: f["type"] == "room", timeout=2)
        assert joined["event"] == "joined" and joined["room"]["id"] == room["id"]
        ack = await o.send_message("welcome carol", room=room["id"])
        got = await c.expect(is_text, timeout=2)
        assert got["message"]["id"] == ack["message"]["id"]
        mine = await c.send_message("thanks", room=room["id"])
        assert mine["type"] == "ack"
        with httpx.Client(timeout=10) as http:
            r = http.delete(
                stack.url(f"/api/rooms/{room['id']}/members/{carol.username}"),
                headers=owner.headers,
            )
            assert r.status_code == 204, r.text
        left = await c.expect(lambda f: f["type"] == "room" and f["event"] == "left", timeout=2)
        assert left["room"]["id"] == room["id"]
        await o.send_message("carol is gone", room=room["id"])
        with pytest.raises(AssertionError):
            await c.expect(is_text, timeout=1.0)
        denied = await c.send_message("let me back", room=room["id"])
        assert denied["type"] == "error" and denied["code"] == "not_a_member"
        await o.close()
        await c.close()

    run(scenario())


def test_logout_closes_the_sessions_sockets_everywhere(stack: Stack) -> None:
    user = register_and_login(stack)

    async def scenario() -> None:
        c1 = await WsClient.connect(stack, user, gateway=0)
        c2 = await WsClient.connect(stack, user, gateway=1)
        with httpx.Client(timeout=10) as http:
            r = http.post(stack.url("/api/auth/logout"), headers=user.headers)
            assert r.status_code == 204, r.text
        assert await c1.close_code(timeout=3) == 4001
        assert await c2.close_code(timeout=3) == 4001
        c3 = await WsClient.connect(stack, None, gateway=2)
        await c3.send({"type": "auth", "token": user.access_token})
        assert await c3.close_code() == 4001
        with httpx.Client(timeout=10) as http:
            h = http.get(stack.url("/api/history/" + "0" * 26), headers=user.headers)
            assert h.status_code == 401
            p = http.get(stack.url("/api/presence"), headers=user.headers)
            assert p.status_code == 401

    run(scenario())


def test_presence_across_gateways(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    direct_room(stack, alice, bob.username)

    def online(who, names: list[str], gateway: int) -> list[str]:  # type: ignore[no-untyped-def]
        with httpx.Client(timeout=10) as http:
            url = stack.gateway_urls[gateway % len(stack.gateway_urls)] + "/api/presence"
            r = http.get(url, params={"users": ",".join(names)}, headers=who.headers)
            assert r.status_code == 200, r.text
            return list(r.json()["online"])

    async def scenario() -> None:
        b = await WsClient.connect(stack, bob, gateway=1)
        a1 = await WsClient.connect(stack, alice, gateway=0)
        assert alice.username in a1.ready["online"] or True  # alice is herself
        f = await b.expect(lambda f: f["type"] == "presence")
        assert f == {"type": "presence", "username": alice.username, "online": True}
        a2 = await WsClient.connect(stack, alice, gateway=2)
        for g in range(len(stack.gateway_urls)):
            wait_for(
                lambda g=g: (
                    online(bob, [alice.username, bob.username], g) == [alice.username, bob.username]
                )
            )
        await a1.close()
        with pytest.raises(AssertionError):  # still online through the other gateway
            await b.expect(lambda f: f["type"] == "presence", timeout=1.5)
        await a2.close()
        f = await b.expect(lambda f: f["type"] == "presence", timeout=5)
        assert f == {"type": "presence", "username": alice.username, "online": False}
        for g in range(len(stack.gateway_urls)):
            wait_for(lambda g=g: online(bob, [alice.username], g) == [])
        await b.close()

    run(scenario())


def test_rate_limit_then_close_4029(stack: Stack) -> None:
    user = register_and_login(stack)

    async def scenario() -> None:
        c = await WsClient.connect(stack, user)
        codes: list[str] = []
        closed: list[int | None] = []

        async def read() -> None:
            try:
                while True:
                    f = await c.recv(timeout=10)
                    if f["type"] == "error":
                        codes.append(f["code"])
            except websockets.ConnectionClosed as exc:
                closed.append(exc.rcvd.code if exc.rcvd else None)

        reader = asyncio.create_task(read())
        ping = orjson.dumps({"type": "ping"}).decode()
        try:
            for _ in range(5000):
                await c.ws.send(ping)
        except websockets.ConnectionClosed:
            pass
        await asyncio.wait_for(reader, 15)
        assert "rate_limited" in codes, (codes[:5], closed)
        assert closed == [4029]

    run(scenario())


def test_a_first_direct_message_is_acked_after_its_room_joined(stack: Stack) -> None:
    """API: the direct room is created by the first send, and its `room` `joined` frame comes
    before the send's ack (the sender's client knows the room the ack names)."""
    alice, bob = register_and_login(stack), register_and_login(stack)

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        await a.expect(lambda f: f["type"] == "synced")
        ack = await a.send_message("first words", to=bob.username)
        assert ack["type"] == "ack", ack
        room = ack["message"]["room"]
        kinds = [
            "joined" if f["type"] == "room" and f["room"]["id"] == room else f["type"]
            for f in a.frames
            if f["type"] == "ack" or (f["type"] == "room" and f.get("event") == "joined")
        ]
        assert kinds == ["joined", "ack"], a.frames
        await a.close()

    asyncio.run(scenario())


def test_a_room_made_over_rest_takes_a_send_at_once(stack: Stack) -> None:
    """A client may send to a room that a REST call has just created, before its gateway has
    heard of the joining through the broker (a browser test caught `not_a_member` for the first
    message of a new conversation under load): the send waits for the joining (at most
    sending.JOIN_WAIT) and is acked. A send to a room of others is still refused, at once."""
    alice = register_and_login(stack)
    peers = [register_and_login(stack) for _ in range(4)]
    bob, eve = peers[0], peers[1]

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        await a.expect(lambda f: f["type"] == "synced")
        for i, peer in enumerate(peers):
            room = direct_room(stack, alice, peer.username)["id"]
            ack = await a.send_message(f"at once {i}", room=room)
            assert ack["type"] == "ack" and ack["message"]["room"] == room, ack
        theirs = direct_room(stack, bob, eve.username)["id"]
        started = time.monotonic()
        refused = await a.send_message("not mine", room=theirs)
        assert (refused["type"], refused["code"]) == ("error", "not_a_member"), refused
        assert time.monotonic() - started < JOIN_WAIT  # the database says so: no waiting
        await a.close()

    asyncio.run(scenario())
