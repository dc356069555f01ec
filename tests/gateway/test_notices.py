"""Notices in the timeline and group settings, end to end (issue 17), both run modes: what
happens to a group (created, joined, removed, left, renamed) is stored in its history as
messages of kind ``notice``, in order with the conversation, and reaches the members online as
``message`` frames; a rename reaches them as an ``updated`` room; unread counts leave notices
and deleted messages out; ``who_can_add: owner`` stops a member re-adding a removed one."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from tests.support.client import (
    Stack,
    User,
    WsClient,
    history,
    is_notice,
    is_text,
    register_and_login,
    wait_for,
)


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def call(stack: Stack, method: str, path: str, user: User, body: Any = None) -> httpx.Response:
    with stack.http() as http:
        return http.request(method, stack.url(path), json=body, headers=user.headers)


def timeline(stack: Stack, user: User, room: str) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = []
    for m in history(stack, user, room, limit=200).json()["messages"]:
        if m["kind"] == "notice":
            n = m["notice"]
            out.append(("notice", n["event"], str(n["username"]), str(n["by"]), str(n["name"])))
        else:
            out.append(("text", m["sender"], m["body"]))
    return out


def notice_of(frame: dict[str, Any]) -> tuple[str, ...]:
    n = frame["message"]["notice"]
    return (n["event"], str(n["username"]), str(n["by"]), str(n["name"]))


def test_notices_are_stored_in_order_and_reach_the_members(stack: Stack) -> None:
    olga, alice, bob, carol, dave = (register_and_login(stack) for _ in range(5))
    r = call(
        stack,
        "POST",
        "/api/rooms",
        olga,
        {"name": "crew", "members": [alice.username, bob.username, dave.username]},
    )
    assert r.status_code == 201, r.text
    room = r.json()["id"]
    path = f"/api/rooms/{room}"

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        d = await WsClient.connect(stack, dave, gateway=1)  # watches, on another gateway

        async def step(resp: httpx.Response, expected: tuple[str, ...]) -> None:
            assert resp.status_code in (200, 204), resp.text
            got = await d.expect(is_notice)
            assert notice_of(got) == expected
            assert got["message"]["body"] is None and got["message"]["room"] == room

        await a.send_message("one", room=room)
        await d.expect(is_text)
        await step(
            call(stack, "POST", f"{path}/members", olga, {"username": carol.username}),
            ("joined", carol.username, olga.username, "None"),
        )
        await a.send_message("two", room=room)
        await d.expect(is_text)
        await step(
            call(stack, "PATCH", path, olga, {"name": "crew 2"}),
            ("renamed", "None", olga.username, "crew 2"),
        )
        updated = await d.expect(lambda f: f["type"] == "room" and f["event"] == "updated")
        assert updated["room"]["name"] == "crew 2"
        await step(
            call(stack, "DELETE", f"{path}/members/{carol.username}", carol),
            ("left", carol.username, carol.username, "None"),
        )
        await step(
            call(stack, "DELETE", f"{path}/members/{bob.username}", olga),
            ("removed", bob.username, olga.username, "None"),
        )
        await a.send_message("three", room=room)
        await d.expect(is_text)
        for c in (a, d):
            await c.close()

    run(scenario())
    expected = [
        ("notice", "created", "None", olga.username, "None"),
        ("text", alice.username, "one"),
        ("notice", "joined", carol.username, olga.username, "None"),
        ("text", alice.username, "two"),
        ("notice", "renamed", "None", olga.username, "crew 2"),
        ("notice", "left", carol.username, carol.username, "None"),
        ("notice", "removed", bob.username, olga.username, "None"),
        ("text", alice.username, "three"),
    ]
    assert wait_for(lambda: timeline(stack, alice, room) == expected and True, 20)
    # a notice reads like any message of the room: one id, one place, for every member
    assert timeline(stack, dave, room) == expected
    # the removed member and the one who left see nothing of the room any more
    for gone in (bob, carol):
        assert history(stack, gone, room).status_code == 404


def test_unread_counts_leave_out_notices_and_deleted_messages(stack: Stack) -> None:
    olga, alice, bob, carol = (register_and_login(stack) for _ in range(4))
    r = call(
        stack,
        "POST",
        "/api/rooms",
        olga,
        {"name": "unread", "members": [alice.username, bob.username]},
    )
    room = r.json()["id"]

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        acks = [await a.send_message(f"m{i}", room=room) for i in range(3)]
        cmid = str(uuid.uuid4())
        await a.send(
            {
                "type": "delete",
                "room": room,
                "message_id": acks[1]["message"]["id"],
                "client_msg_id": cmid,
            }
        )
        ack = await a.expect(lambda f: f.get("client_msg_id") == cmid)
        assert ack["type"] == "ack", ack
        await a.close()

    run(scenario())
    assert (
        call(
            stack, "POST", f"/api/rooms/{room}/members", olga, {"username": carol.username}
        ).status_code
        == 200
    )
    assert call(stack, "PATCH", f"/api/rooms/{room}", olga, {"name": "unread 2"}).status_code == 200
    wait_for(
        lambda: (
            [m["kind"] for m in history(stack, bob, room).json()["messages"]]
            == ["notice", "text", "text", "text", "notice", "notice"]
            and history(stack, bob, room).json()["messages"][2]["deleted"]
        ),
        20,
    )

    async def reconnect() -> dict[str, Any]:
        b = await WsClient.connect(stack, bob)
        await b.close()
        return b.ready

    ready = run(reconnect())
    mine = next(r for r in ready["rooms"] if r["id"] == room)
    assert mine["unread"] == 2  # m0 and m2: not the deleted m1, not the three notices
    rest = call(stack, "GET", f"/api/rooms/{room}", bob).json()
    assert rest["unread"] == 2


def test_who_can_add_owner_keeps_a_removed_member_out(stack: Stack) -> None:
    """The reported bug, end to end: the owner removes carol; bob (a member) cannot add her
    back once only the owner may add, and she gets nothing of the room."""
    olga, bob, carol = (register_and_login(stack) for _ in range(3))
    r = call(
        stack,
        "POST",
        "/api/rooms",
        olga,
        {"name": "private", "members": [bob.username, carol.username]},
    )
    room = r.json()
    path = f"/api/rooms/{room['id']}"
    assert room["who_can_add"] == "members"

    async def scenario() -> None:
        b = await WsClient.connect(stack, bob, gateway=0)
        c = await WsClient.connect(stack, carol, gateway=1)
        r = call(stack, "PATCH", path, olga, {"who_can_add": "owner"})
        assert r.status_code == 200 and r.json()["who_can_add"] == "owner"
        updated = await b.expect(lambda f: f["type"] == "room" and f["event"] == "updated")
        assert updated["room"]["who_can_add"] == "owner"
        assert call(stack, "DELETE", f"{path}/members/{carol.username}", olga).status_code == 204
        await c.expect(lambda f: f["type"] == "room" and f["event"] == "left")
        r = call(stack, "POST", f"{path}/members", bob, {"username": carol.username})
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
        secret = await b.send_message("while carol is out", room=room["id"])
        assert secret["type"] == "ack"
        # carol hears nothing of it, and cannot read it
        await c.send({"type": "ping"})
        await c.expect(lambda f: f["type"] == "pong")
        assert not [f for f in c.unmatched if is_text(f)]
        assert history(stack, carol, room["id"]).status_code == 404
        for ws in (b, c):
            await ws.close()

    run(scenario())
