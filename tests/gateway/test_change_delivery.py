"""How a gateway delivers edits and deletes (services/gateway/service.py), alone: no broker, no
sockets, one fake connection of a room's member. Once per change, after the message; a change
that overtakes its message's live copy (it came from another gateway, on another channel) makes
the message go out as changed; what the gateway remembers follows every change."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest

from services.common import events, topology
from services.common.bus import Delivery
from services.common.bus.memory import MemoryBus
from services.common.ids import iso_ms, message_id, now_ms
from services.common.schema import message_object
from services.common.settings import Settings
from services.common.tokens import RevocationSet
from services.gateway.changes import change_key
from services.gateway.membership import RoomState, UserState
from services.gateway.service import GatewayService

ROOM = "r" * 26
ALICE, BOB = "a" * 26, "b" * 26


class FakeConn:
    def __init__(self, cid: str) -> None:
        self.id = cid
        self.frames: list[dict[str, Any]] = []

    def send_text(self, text: str) -> None:
        self.frames.append(orjson.loads(text))


@pytest.fixture
def gateway(tmp_path: Path) -> tuple[GatewayService, FakeConn]:
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        broker_url="memory://",
        jwt_secret="x" * 48,
        gateway_id="gw-test",
    )
    gw = GatewayService(settings, MemoryBus(), engine=None, revoked=RevocationSet())  # type: ignore[arg-type]
    room = RoomState({"id": ROOM, "kind": "group", "owner": "olga", "version": 1})
    bob = UserState(BOB, "bob")
    conn = FakeConn("c1")
    bob.conns.add(conn)  # type: ignore[arg-type]
    bob.rooms.add(ROOM)
    room.local.add(BOB)
    gw.membership.rooms[ROOM] = room
    gw.membership.users[BOB] = bob
    return gw, conn


def message_event(cmid: str, body: str, sent: int) -> dict[str, Any]:
    msg = message_object(message_id(ALICE, cmid), ROOM, "alice", body, sent, cmid)
    return {"type": "message", "message": msg, "sender_id": ALICE, "sent_ms": sent}


def change_event(kind: str, msg: dict[str, Any], cmid: str, body: str | None = None) -> Any:
    at = now_ms()
    changed = {
        **msg,
        "body": body,
        "edited_at": iso_ms(at) if kind == "edit" else msg["edited_at"],
        "deleted": kind == "delete",
    }
    make = events.edit_entry if kind == "edit" else events.delete_entry
    entry = make(changed, ALICE, cmid, at, {"gw": "gw-other", "conn": "c9"})
    entry["sender_id"] = ALICE
    return entry


def kinds(conn: FakeConn) -> list[tuple[str, Any]]:
    return [(f["type"], f["message"]["body"]) for f in conn.frames]


def test_a_change_after_its_message_goes_out_once(
    gateway: tuple[GatewayService, FakeConn],
) -> None:
    gw, conn = gateway

    async def body() -> None:
        sent = message_event("m1", "draft", now_ms())
        gw._deliver_entry(sent)
        edit = change_event("edit", sent["message"], "e1", "final")
        gw._deliver_entry(edit)
        gw._deliver_entry(edit)  # routed twice: delivered once
        live = orjson.dumps({"type": "live", "messages": [edit]})  # and once more, live
        await gw._on_delivery(Delivery(live, topology.room_live_key(ROOM), topology.MESSAGES))
        assert kinds(conn) == [("message", "draft"), ("message_changed", "final")]
        rec = gw.seen.get(sent["message"]["id"])
        assert rec is not None and rec.edited_ms is not None and not rec.deleted
        # the original send's held ack now carries the edit; the edit's ack is held too
        assert gw.acked.get((ALICE, "m1")) == edit["message"]
        assert gw.acked.get(change_key(ALICE, "e1")) == edit["message"]
        delete = change_event("delete", edit["message"], "d1")
        gw._deliver_entry(delete)
        assert kinds(conn)[-1] == ("message_changed", None)
        assert gw.seen.get(sent["message"]["id"]).deleted  # type: ignore[union-attr]
        held = gw.acked.get((ALICE, "m1"))
        assert held is not None and held["body"] is None  # no deleted text kept for a retry

    asyncio.run(body())


def test_a_change_that_overtakes_its_message_never_lets_the_old_text_show(
    gateway: tuple[GatewayService, FakeConn],
) -> None:
    gw, conn = gateway

    async def body() -> None:
        sent = message_event("m2", "draft", now_ms())
        edit = change_event("edit", sent["message"], "e2", "final")
        gw._deliver_entry(edit)  # another gateway's change came first
        gw._deliver_entry(sent)  # then the message's own live copy
        assert kinds(conn) == [("message_changed", "final"), ("message", "final")]
        assert conn.frames[-1]["message"]["edited_at"] is not None
        gw._deliver_entry(sent)  # a second copy: nothing
        assert len(conn.frames) == 2

    asyncio.run(body())


def test_an_old_message_changed_here_first_is_not_kept(
    gateway: tuple[GatewayService, FakeConn],
) -> None:
    gw, _conn = gateway

    async def body() -> None:
        old = message_event("m3", "from last year", now_ms() - 3600_000)
        gw._deliver_entry(change_event("delete", old["message"], "d3"))
        assert len(gw.early) == 0

    asyncio.run(body())
