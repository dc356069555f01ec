"""Read positions: the ``read`` frame, and keeping a user's connections on every gateway in step
(docs/PROTOCOL.md, "Read state").

A ``read`` frame names a message of a room the user is in. Its position (``sent_ms``, id) comes
from the messages this gateway has delivered (``known``: so a message read the moment it
arrives need not be in history yet) or else from history. The user's position only moves
forwards: a frame at or behind the position this gateway knows costs nothing, and the database
write is a conditional UPDATE (several devices reading at once keep the furthest). While one
write of a (user, room) is in flight, later frames for it wait and only the furthest is written
next: a client marking every arriving message read costs at most one write at a time.

When the position moved, the user's other connections hear ``{"type":"read","room",
"message_id"}``: those on this gateway directly, those on other gateways (presence says which)
through each gateway's own key ``gw.<id>``: no broadcast to every gateway.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from services.common import events, topology
from services.common.bus import Bus, PublishError
from services.common.readstate import Position
from services.common.schema import ID_RE, FrameError, ReadFrame
from services.gateway.connection import Connection
from services.gateway.membership import Membership, UserState
from services.gateway.store import GatewayStore

log = logging.getLogger("chat.gateway.reads")

Known = Callable[[str], tuple[str, int] | None]  # message id -> (room id, sent_ms), if seen here
Where = Callable[[str], list[str]]  # username -> the other gateways it is connected to


class ReadSync:
    def __init__(
        self,
        bus: Bus,
        gateway_id: str,
        store: GatewayStore,
        membership: Membership,
        known: Known,
        where: Where,
    ) -> None:
        self.bus = bus
        self.gw = gateway_id
        self.store = store
        self.membership = membership
        self.known = known
        self.where = where
        self.writing: set[tuple[str, str]] = set()  # (user id, room id) with a write in flight
        self.waiting: dict[tuple[str, str], tuple[Position, Connection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.writes = 0  # database writes made (tests, metrics)

    async def position(self, conn: Connection, frame: ReadFrame) -> Position:
        """The frame's position; FrameError for a room the user is not in or a message that is
        not one of that room's."""
        if not ID_RE.match(frame.room) or not self.membership.is_member(conn.user_id, frame.room):
            raise FrameError("room_not_found", "no such room")
        if not ID_RE.match(frame.message_id):
            raise FrameError("message_not_found", "no such message in this room")
        seen = self.known(frame.message_id)
        if seen is not None:
            if seen[0] != frame.room:
                raise FrameError("message_not_found", "no such message in this room")
            return (seen[1], frame.message_id)
        pos = await asyncio.to_thread(self.store.message_position, frame.room, frame.message_id)
        if pos is None:
            raise FrameError("message_not_found", "no such message in this room")
        return pos

    async def handle(self, conn: Connection, frame: ReadFrame) -> None:
        pos = await self.position(conn, frame)
        us = self.membership.users.get(conn.user_id)
        if us is None:
            return
        held = us.read.get(frame.room)
        if held is not None and pos <= held:
            return  # not forwards: nothing to do
        key = (conn.user_id, frame.room)
        if key in self.writing:
            queued = self.waiting.get(key)
            if queued is None or queued[0] < pos:
                self.waiting[key] = (pos, conn)
            return
        self.writing.add(key)
        task = asyncio.get_running_loop().create_task(self._write(key, pos, conn))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(self, key: tuple[str, str], pos: Position, conn: Connection) -> None:
        user_id, room_id = key
        try:
            while True:
                try:
                    moved = await asyncio.to_thread(self.store.advance_read, user_id, room_id, pos)
                    self.writes += 1
                except Exception as exc:
                    log.warning("read position not saved: %s", exc)
                    if not conn.closed:
                        conn.send(
                            {
                                "type": "error",
                                "code": "unavailable",
                                "message": "the read position could not be saved; retry",
                            }
                        )
                    moved = False
                if moved:
                    self._moved(conn, room_id, pos)
                nxt = self.waiting.pop(key, None)
                if nxt is None:
                    return
                pos, conn = nxt
        finally:
            self.writing.discard(key)

    def _moved(self, conn: Connection, room_id: str, pos: Position) -> None:
        us = self.membership.users.get(conn.user_id)
        if us is not None:
            self.remember(us, room_id, pos)
            self._tell(us, room_id, pos[1], skip=conn)
        others = self.where(conn.username)
        if not others:
            return
        event = events.read(
            conn.user_id, room_id, pos[1], pos[0], origin={"gw": self.gw, "conn": conn.id}
        )
        body = orjson.dumps(event)
        task = asyncio.get_running_loop().create_task(self._publish(others, body))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, gateways: list[str], body: bytes) -> None:
        for gw in gateways:
            try:
                await self.bus.publish_transient(topology.EVENTS, topology.gateway_key(gw), body)
            except PublishError:  # their clients catch up at their next `ready`
                log.warning("read position not relayed to gateway %s", gw)

    # from the bus ----------------------------------------------------------------------------
    def on_read(self, event: dict[str, Any]) -> None:
        """Another gateway's, or auth's (``POST /api/rooms/{id}/read``), moved position."""
        us = self.membership.users.get(str(event["user_id"]))
        if us is None:
            return
        room_id, mid = str(event["room"]), str(event["message_id"])
        pos = (int(event["sent_ms"]), mid)
        self.remember(us, room_id, pos)
        self._tell(us, room_id, mid, skip=None)

    def on_muted(self, event: dict[str, Any]) -> None:
        us = self.membership.users.get(str(event["user_id"]))
        if us is None:
            return
        frame = {"type": "muted", "room": str(event["room"]), "muted": bool(event["muted"])}
        text = orjson.dumps(frame).decode()
        for c in us.conns:
            c.send_text(text)  # a connection not ready yet gets it right after `ready`

    # helpers ---------------------------------------------------------------------------------
    @staticmethod
    def remember(us: UserState, room_id: str, pos: Position) -> None:
        held = us.read.get(room_id)
        if held is None or held < pos:
            us.read[room_id] = pos

    @staticmethod
    def _tell(us: UserState, room_id: str, message_id: str, skip: Connection | None) -> None:
        text = orjson.dumps({"type": "read", "room": room_id, "message_id": message_id}).decode()
        for c in us.conns:
            if c is not skip:
                c.send_text(text)
