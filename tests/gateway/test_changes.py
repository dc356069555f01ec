"""Editing and deleting messages over the WebSocket (issue 17), one body for both run modes (in
the scaled mode the members' connections are on different gateways):

- the sender edits their own message: an ack with the changed message, durable (history has it
  once acked), ``message_changed`` to every member's connections on every gateway, never to
  the connection that has the ack;
- editing or deleting someone else's message is refused (``forbidden``), but a group's owner
  deletes anyone's; a delete removes the body from the database and the search index;
- a retried edit gives the same ack and one change (same gateway, another gateway, ``retry``);
- an edit sent right after its send, before the history writer committed the message (the
  scaled mode stops the writers meanwhile), lands after it in history and live;
- bad frames get error frames, never a closed connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.common.ids import change_id
from services.common.models import Message, MessageChange, MessageSearch
from tests.support.client import (
    Stack,
    User,
    WsClient,
    history,
    is_text,
    register_and_login,
    wait_for,
)
from tools.cluster import Cluster


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def group(stack: Stack, owner: User, members: list[str], name: str = "edits") -> str:
    with stack.http() as http:
        r = http.post(
            stack.url("/api/rooms"), json={"name": name, "members": members}, headers=owner.headers
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])


@contextlib.contextmanager
def database(stack: Stack) -> Iterator[Engine]:
    engine = make_engine(stack.extra["database_url"])
    try:
        yield engine
    finally:
        engine.dispose()


def stored(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Message).where(Message.id == message_id)).first()


def changes_of(engine: Engine, change: str) -> int:
    with engine.connect() as conn:
        q = select(func.count()).select_from(MessageChange).where(MessageChange.id == change)
        return int(conn.scalar(q) or 0)


async def change(
    c: WsClient,
    kind: str,
    room: str,
    message_id: str,
    body: str | None = None,
    *,
    cmid: str | None = None,
    timeout: float = 10.0,
    **extra: Any,
) -> dict[str, Any]:
    """Send an edit (with ``body``) or a delete; its ack or error."""
    cmid = cmid or str(uuid.uuid4())
    frame: dict[str, Any] = {
        "type": kind,
        "room": room,
        "message_id": message_id,
        "client_msg_id": cmid,
        **extra,
    }
    if body is not None:
        frame["body"] = body
    await c.send(frame)
    return await c.expect(
        lambda f: f.get("client_msg_id") == cmid and f["type"] in ("ack", "error"), timeout
    )


def changed(message_id: str):  # type: ignore[no-untyped-def]
    return lambda f: f["type"] == "message_changed" and f["message"]["id"] == message_id


async def nothing_pending(c: WsClient, kind: str) -> None:
    """No frame of ``kind`` is waiting for ``c``: the pong to a later ping came first."""
    await c.send({"type": "ping"})
    await c.expect(lambda f: f["type"] == "pong")
    stray = [f for f in c.unmatched if f["type"] == kind]
    assert not stray, stray


def test_sender_edits_and_every_connection_hears_of_it(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        a2 = await WsClient.connect(stack, alice, gateway=2)  # alice's other device
        sent = (await a.send_message("teh plan", room=room))["message"]
        await b.expect(is_text)
        ack = await change(a, "edit", room, sent["id"], "the plan")
        assert ack["type"] == "ack", ack
        msg = ack["message"]
        assert (msg["id"], msg["sent_at"], msg["client_msg_id"]) == (
            sent["id"],
            sent["sent_at"],
            sent["client_msg_id"],
        )
        assert msg["body"] == "the plan" and msg["edited_at"] is not None
        assert msg["edited_at"] >= msg["sent_at"] and msg["deleted"] is False
        assert msg["kind"] == "text" and msg["sender"] == alice.username
        for c in (b, a2):  # another member, and the author's other connection
            got = await c.expect(changed(sent["id"]))
            assert got["message"] == msg
        await nothing_pending(a, "message_changed")  # the editing connection has its ack
        # durable: history shows the edit as soon as it is acked (all-in-one) or committed
        page = wait_for(
            lambda: (
                (h := history(stack, bob, room).json()["messages"])[-1]["body"] == "the plan" and h
            ),
            10,
        )
        assert page[-1] == msg
        for c in (a, b, a2):
            await c.close()

    run(scenario())


def test_only_the_sender_edits_and_the_owner_deletes(stack: Stack) -> None:
    owner, alice, bob = (register_and_login(stack) for _ in range(3))
    room = group(stack, owner, [alice.username, bob.username])

    async def scenario() -> None:
        o = await WsClient.connect(stack, owner, gateway=0)
        a = await WsClient.connect(stack, alice, gateway=1)
        b = await WsClient.connect(stack, bob, gateway=2)
        mine = (await a.send_message("alice's words", room=room))["message"]
        await b.expect(is_text)
        await o.expect(is_text)
        for who, kind in ((b, "edit"), (b, "delete"), (o, "edit")):
            err = await change(who, kind, room, mine["id"], "hijacked" if kind == "edit" else None)
            assert (err["type"], err["code"]) == ("error", "forbidden"), err
        # the owner of the group removes it (moderation)
        ack = await change(o, "delete", room, mine["id"])
        assert ack["type"] == "ack", ack
        gone = ack["message"]
        assert gone["deleted"] is True and gone["body"] is None and gone["id"] == mine["id"]
        for c in (a, b):
            assert (await c.expect(changed(mine["id"])))["message"] == gone
        # a deleted message cannot be edited; deleting it again is already done
        err = await change(a, "edit", room, mine["id"], "undo")
        assert (err["type"], err["code"]) == ("error", "message_not_found")
        again = await change(a, "delete", room, mine["id"])
        assert again["type"] == "ack" and again["message"]["deleted"] is True
        # the sender deletes their own in a direct-like case: bob's message, bob deletes
        own = (await b.send_message("oops, wrong room", room=room))["message"]
        ack = await change(b, "delete", room, own["id"])
        assert ack["type"] == "ack" and ack["message"]["body"] is None
        for c in (o, a, b):
            await c.close()

    run(scenario())

    def both_deleted() -> list[dict[str, Any]] | None:
        """The text messages once history shows both deletes (the scaled mode's writer
        commits a moment after the acks)."""
        messages = history(stack, bob, room).json()["messages"]
        texts = [m for m in messages if m["kind"] == "text"]
        return texts if [m["deleted"] for m in texts] == [True, True] else None

    texts = wait_for(both_deleted, 10)
    with database(stack) as engine:
        assert all(m["body"] is None for m in texts)
        for m in texts:
            # the body is gone from the row and from the search index, not only hidden
            row = wait_for(
                lambda m=m: (r := stored(engine, m["id"])) is not None and r.deleted and r
            )
            assert row.body is None and row.deleted_ms is not None
            with engine.connect() as conn:
                doc = conn.scalar(
                    select(func.count())
                    .select_from(MessageSearch)
                    .where(MessageSearch.message_id == m["id"])
                )
            assert doc == 0


def test_a_retried_edit_is_one_change_with_the_same_ack(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])
    cmid = f"edit-{uuid.uuid4()}"

    async def scenario() -> dict[str, Any]:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        sent = (await a.send_message("first", room=room))["message"]
        await b.expect(is_text)
        first = await change(a, "edit", room, sent["id"], "second", cmid=cmid)
        again = await change(a, "edit", room, sent["id"], "second", cmid=cmid)  # same socket
        assert first["type"] == "ack" and again == first
        await b.expect(changed(sent["id"]))
        await nothing_pending(b, "message_changed")  # the retry changed nothing more
        await a.close()
        # after a reconnect to another gateway, marked as a retry: the same change
        a3 = await WsClient.connect(stack, alice, gateway=2)
        third = await change(a3, "edit", room, sent["id"], "second", cmid=cmid, retry=True)
        assert third["type"] == "ack", third
        assert third["message"]["id"] == sent["id"] and third["message"]["body"] == "second"
        assert third["message"]["edited_at"] == first["message"]["edited_at"]
        await nothing_pending(b, "message_changed")
        for c in (a3, b):
            await c.close()
        return dict(first["message"])

    msg = run(scenario())
    with database(stack) as engine:
        wait_for(lambda: changes_of(engine, change_id(alice.id, cmid)) == 1)
        row = stored(engine, msg["id"])
        assert row.body == "second" and row.edited_ms is not None
        with engine.connect() as conn:
            n = conn.scalar(
                select(func.count())
                .select_from(MessageChange)
                .where(MessageChange.message_id == msg["id"])
            )
        assert n == 1


@contextlib.contextmanager
def writers_stopped(stack: Stack) -> Iterator[bool]:
    """The scaled mode's history writers stopped (SIGSTOP) meanwhile: the broker still confirms
    (the shard's queue holds what comes), nothing is committed. All-in-one: no change (its
    acks wait for the commit; False)."""
    cluster: Cluster | None = stack.extra.get("cluster")
    if cluster is None:
        yield False
        return
    procs = [p for p in cluster.history_procs if p.alive()]
    for p in procs:
        p.signal(signal.SIGSTOP)
    try:
        yield True
    finally:
        for p in procs:
            p.signal(signal.SIGCONT)


def test_an_edit_racing_its_message_lands_after_it(stack: Stack) -> None:
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = group(stack, alice, [bob.username])
    late = f"late-{uuid.uuid4()}"

    async def scenario(engine: Engine) -> str:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        with writers_stopped(stack) as stopped:
            sent = (await a.send_message("draft", room=room))["message"]
            ack = await change(a, "edit", room, sent["id"], "final")  # right behind it
            assert ack["type"] == "ack", ack
            if stopped:  # acked although the message itself is not in the database yet
                assert stored(engine, sent["id"]) is None
            # live, on another gateway: the message first, then its change
            first = await b.expect(lambda f: f["type"] in ("message", "message_changed"))
            assert is_text(first) and first["message"]["body"] == "draft"
            assert (await b.expect(changed(sent["id"])))["message"]["body"] == "final"
            if stopped:
                # a gateway that never saw the message cannot find it anywhere yet: it waits
                # for the writer of the room's shard, then answers `unavailable` (retry later)
                a2 = await WsClient.connect(stack, alice, gateway=2)
                err = await change(a2, "edit", room, sent["id"], "final 2", cmid=late, timeout=15)
                assert (err["type"], err["code"]) == ("error", "unavailable"), err
        if stopped:  # the writers are back: the retry is taken
            ack = await change(a2, "edit", room, sent["id"], "final 2", cmid=late, retry=True)
            assert ack["type"] == "ack", ack
            assert (await b.expect(changed(sent["id"])))["message"]["body"] == "final 2"
            await a2.close()
        for c in (a, b):
            await c.close()
        return str(ack["message"]["body"])

    with database(stack) as engine:
        final = run(scenario(engine))
        page = wait_for(
            lambda: (m := history(stack, bob, room).json()["messages"])[-1]["body"] == final and m,
            20,
        )
        texts = [m for m in page if m["kind"] == "text"]
        assert len(texts) == 1 and texts[0]["edited_at"] is not None
        with engine.connect() as conn:
            statuses = list(
                conn.scalars(
                    select(MessageChange.status).where(MessageChange.message_id == texts[0]["id"])
                )
            )
        assert statuses and set(statuses) == {"applied"}, statuses


def test_bad_change_frames_get_errors(stack: Stack) -> None:
    alice, bob, eve = (register_and_login(stack) for _ in range(3))
    room = group(stack, alice, [bob.username])
    other = group(stack, alice, [], name="elsewhere")
    eves = group(stack, eve, [], name="eve's")

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        sent = (await a.send_message("a message", room=room))["message"]
        elsewhere = (await a.send_message("in another room", room=other))["message"]
        notice = wait_for(
            lambda: next(
                (
                    m
                    for m in history(stack, alice, room).json()["messages"]
                    if m["kind"] == "notice"
                ),
                None,
            )
        )
        cases: list[tuple[dict[str, Any], str]] = [
            ({"room": room, "message_id": "m" + "0" * 25, "body": "x"}, "message_not_found"),
            ({"room": room, "message_id": "not an id", "body": "x"}, "message_not_found"),
            ({"room": room, "message_id": elsewhere["id"], "body": "x"}, "message_not_found"),
            ({"room": eves, "message_id": sent["id"], "body": "x"}, "not_a_member"),
            ({"room": "nope", "message_id": sent["id"], "body": "x"}, "room_not_found"),
            ({"room": room, "message_id": sent["id"], "body": "   "}, "empty_body"),
            ({"room": room, "message_id": sent["id"], "body": "x" * 4001}, "body_too_long"),
            ({"room": room, "message_id": sent["id"], "body": 5}, "invalid_frame"),
            ({"room": room, "message_id": sent["id"]}, "invalid_frame"),  # an edit needs a body
            ({"room": room, "body": "x"}, "invalid_frame"),
            ({"room": [room], "message_id": sent["id"], "body": "x"}, "invalid_frame"),
            ({"message_id": sent["id"], "body": "x"}, "invalid_frame"),
            ({"room": room, "message_id": notice["id"], "body": "x"}, "forbidden"),
        ]
        for fields, code in cases:
            cmid = str(uuid.uuid4())
            await a.send({"type": "edit", "client_msg_id": cmid, **fields})
            err = await a.expect(lambda f, cmid=cmid: f.get("client_msg_id") == cmid)
            assert (err["type"], err["code"]) == ("error", code), (fields, err)
        for fields in ({"room": room}, {"room": room, "message_id": None}):
            await a.send({"type": "delete", "client_msg_id": "d-1", **fields})
            err = await a.expect(lambda f: f.get("client_msg_id") == "d-1")
            assert err["code"] == "invalid_frame"
        for frame in (
            {"type": "delete", "room": room, "message_id": sent["id"]},  # no client_msg_id
            {"type": "edit", "room": room, "message_id": sent["id"], "client_msg_id": "x" * 65},
        ):
            await a.send(frame)
            err = await a.expect(lambda f: f["type"] == "error")
            assert err["code"] == "invalid_frame"
        # still open, and the message is intact
        await a.send({"type": "ping"})
        await a.expect(lambda f: f["type"] == "pong")
        await a.close()

    run(scenario())
    mine = [m for m in history(stack, alice, room).json()["messages"] if m["kind"] == "text"]
    assert [(m["body"], m["edited_at"], m["deleted"]) for m in mine] == [("a message", None, False)]


def test_a_removed_member_cannot_change_messages(stack: Stack) -> None:
    owner, alice = register_and_login(stack), register_and_login(stack)
    room = group(stack, owner, [alice.username])

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice)
        sent = (await a.send_message("before I go", room=room))["message"]
        with httpx.Client(timeout=10) as http:
            r = http.delete(
                stack.url(f"/api/rooms/{room}/members/{alice.username}"), headers=owner.headers
            )
            assert r.status_code == 204, r.text
        await a.expect(lambda f: f["type"] == "room" and f["event"] == "left")
        for kind in ("edit", "delete"):
            err = await change(a, kind, room, sent["id"], "x" if kind == "edit" else None)
            assert (err["type"], err["code"]) == ("error", "not_a_member"), err
        await a.close()

    run(scenario())


def test_joined_comes_once_history_holds_what_the_new_room_already_had(scaled: Stack) -> None:
    """A member's gateway binds a new room a moment after its creation; a message sent to the
    room before that reached no socket there, so the member's first read of the room must find
    it: the gateway tells `joined` only once the room's history shard has passed a marker. With
    the writers stopped, no `joined` comes (up to the gateway's 3 s bound); once they run again
    it comes, and history already holds the message. (Before: `joined` came at once, and a
    read then missed a message that no live frame would bring; a browser test flaked on it.)"""
    alice, bob = register_and_login(scaled), register_and_login(scaled)

    async def scenario() -> None:
        a = await WsClient.connect(scaled, alice, gateway=0)
        b = await WsClient.connect(scaled, bob, gateway=1)
        for c in (a, b):
            await c.expect(lambda f: f["type"] == "synced")
        with writers_stopped(scaled):
            room = group(scaled, alice, [bob.username], name="new room")
            deadline = time.monotonic() + 10
            while True:  # alice's gateway takes her sends once it has applied the membership
                sent = await a.send_message("before bob's gateway knew", room=room, cmid="first")
                if sent["type"] == "ack":
                    break
                assert sent["code"] == "not_a_member" and time.monotonic() < deadline, sent
                await asyncio.sleep(0.02)
            with pytest.raises(AssertionError):  # the writers are stopped: no `joined` yet
                await b.expect(lambda f: f["type"] == "room" and f["event"] == "joined", 1.0)
        joined = await b.expect(lambda f: f["type"] == "room" and f["event"] == "joined", 10)
        assert joined["room"]["id"] == room
        ids = [m["id"] for m in history(scaled, bob, room).json()["messages"]]
        assert sent["message"]["id"] in ids, ids
        for c in (a, b):
            await c.close()

    run(scenario())
