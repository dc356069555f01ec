"""The send path: a ``send`` frame to its ``ack`` (API.md "WebSocket", docs/PROTOCOL.md), and
the same for ``edit`` and ``delete`` (changes.py decides what they store).

A message's id is derived from (sender, client_msg_id), so a retry is the same message on any
gateway (a change's id likewise from its author and client_msg_id). The ack comes once the
broker has confirmed the persistent, mandatory publish (the history queue holds it). A retry of
an acked send gets the same ack: from the ack cache, else (``retry: true``) from history once
the writer has passed everything routed before it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson

from services.common import topology
from services.common.bus import Bus, PublishError
from services.common.config import HistoryConfig
from services.common.ids import message_id, now_ms
from services.common.schema import ID_RE, ChangeFrame, FrameError, SendFrame, message_object
from services.gateway import metrics
from services.gateway.changes import Changes, change_key
from services.gateway.connection import Connection
from services.gateway.doubts import Doubts
from services.gateway.lru import AckCache
from services.gateway.membership import Membership, room_key
from services.gateway.publisher import Publisher
from services.gateway.store import GatewayStore
from services.gateway.sync import SyncMarkers

# how long a send to a room the user joined a moment ago (over REST) waits for that joining to
# reach this gateway through the broker
JOIN_WAIT = 3.0

log = logging.getLogger("chat.gateway.sending")


class Sender:
    def __init__(
        self,
        bus: Bus,
        gateway_id: str,
        store: GatewayStore,
        membership: Membership,
        markers: SyncMarkers,
        acked: AckCache,
        publisher: Publisher,
    ) -> None:
        self.bus = bus
        self.gw = gateway_id
        self.store = store
        self.membership = membership
        self.markers = markers
        self.acked = acked
        self.publisher = publisher
        self.pending: dict[tuple[str, str], asyncio.Future[dict[str, Any] | None]] = {}
        self.config = HistoryConfig(shards=1)  # the service keeps it current
        self.changes: Changes | None = None  # edits and deletes (the service sets it)
        self.doubts: Doubts | None = None  # lost confirms settled later (the service sets it)

    async def handle(self, conn: Connection, frame: SendFrame | ChangeFrame) -> None:
        """Answer a ``send``, ``edit`` or ``delete`` frame with its ack (or an error); a
        resend of one that is in flight or was acked here gets the same answer."""
        started = time.perf_counter()
        if isinstance(frame, ChangeFrame):
            key = change_key(conn.user_id, frame.client_msg_id)
        else:
            key = (conn.user_id, frame.client_msg_id)
        done = self.acked.get(key)
        if done is not None:
            conn.send({"type": "ack", "client_msg_id": frame.client_msg_id, "message": done})
            return
        waiting = self.pending.get(key)
        if waiting is not None:  # the same send is in flight (a quick retry): same answer
            try:
                result = await asyncio.shield(waiting)
            except FrameError as exc:
                send_error(conn, exc.code, exc.message, frame.client_msg_id)
                return
            if result is not None:
                conn.send({"type": "ack", "client_msg_id": frame.client_msg_id, "message": result})
            return
        future: asyncio.Future[dict[str, Any] | None] = asyncio.get_running_loop().create_future()
        self.pending[key] = future
        try:
            msg = await self._accept(conn, frame)
        except FrameError as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning
            send_error(conn, exc.code, exc.message, frame.client_msg_id)
            return
        except Exception:
            log.exception("send failed")
            err = FrameError("unavailable", "the message could not be accepted; retry")
            future.set_exception(err)
            future.exception()
            send_error(conn, err.code, err.message, frame.client_msg_id)
            return
        finally:
            self.pending.pop(key, None)
        future.set_result(msg)
        self.acked.put(key, msg)
        if isinstance(frame, ChangeFrame):
            metrics.CHANGES.labels(frame.kind).inc()
        else:
            metrics.ACCEPTED.inc()
            metrics.SEND_SECONDS.observe(time.perf_counter() - started)
        conn.send({"type": "ack", "client_msg_id": frame.client_msg_id, "message": msg})

    async def _joining(self, conn: Connection, room_id: str, cmid: str) -> None:
        """A send to a room this gateway does not know the user in: refused, unless the
        database has them in it (a room created or joined over REST a moment ago, its event
        still on its way here): then it waits for that event, at most ``JOIN_WAIT`` seconds."""
        try:
            member = await asyncio.to_thread(self.store.is_member, conn.user_id, room_id)
        except Exception as exc:  # the database is away: the gateway cannot tell
            log.warning("membership check failed: %r", exc)
            raise FrameError("unavailable", "cannot check the room now; retry", cmid) from exc
        if not member:
            raise FrameError("not_a_member", "you are not a member of this room", cmid)
        if not await self.membership.member_soon(conn.user_id, room_id, JOIN_WAIT):
            raise FrameError("unavailable", "joining the room; retry in a moment", cmid)

    async def _accept(self, conn: Connection, frame: SendFrame | ChangeFrame) -> dict[str, Any]:
        cmid = frame.client_msg_id
        if not self.membership.may_act(conn.user_id):
            raise FrameError("unavailable", "reconnecting to the cluster; retry in a moment", cmid)
        if self.config.paused:  # python -m services reshard: history is changing its shards
            raise FrameError("unavailable", "history is being reorganised; retry shortly", cmid)
        if isinstance(frame, ChangeFrame):
            assert self.changes is not None
            return await self.changes.accept(conn, frame)
        peer_id: str | None = None
        if frame.to is not None:
            room_id, peer_id = await self._direct_room(conn, frame.to)
        else:
            room_id = frame.room or ""
            if not ID_RE.match(room_id):
                raise FrameError("room_not_found", "no such room", cmid)
            if not self.membership.is_member(conn.user_id, room_id):
                await self._joining(conn, room_id, cmid)
        mid = message_id(conn.user_id, cmid)
        if frame.retry:
            stored = await asyncio.to_thread(self.store.stored_message, mid, conn.user_id)
            if stored is None:
                # the first attempt may still be on its way to history (its answer was lost or
                # `unavailable`): let the writer pass everything routed before now, look again
                shard = topology.shard_of(room_id, self.config.shards)
                if not await self.markers.caught_up(5.0, [shard]):
                    raise FrameError(
                        "unavailable", "history is catching up; retry in a moment", cmid
                    )
                stored = await asyncio.to_thread(self.store.stored_message, mid, conn.user_id)
            if stored is not None:
                if self.doubts is not None:  # its first answer may have been lost: so may its
                    # delivery to the members here (doubts.py)
                    origin = {"gw": self.gw, "conn": conn.id}
                    entry = {"type": "message", "sender_id": conn.user_id, "origin": origin}
                    self.doubts.found(entry, stored)
                return stored
        room = self.membership.rooms.get(room_id)
        last = room.clock if room is not None else 0
        sent = max(now_ms(), last + 1)
        if room is not None:
            room.clock = sent
        msg = message_object(mid, room_id, conn.username, frame.body, sent, cmid)
        event = {
            "type": "message",
            "message": msg,
            "sender_id": conn.user_id,
            "sent_ms": sent,
            "origin": {"gw": self.gw, "conn": conn.id},
        }
        try:
            await self.publisher.publish(event)  # in history (confirmed), then to the members
        except PublishError as exc:
            log.warning("publish failed: %s", exc)
            if self.doubts is not None:  # the broker may have taken it all the same
                self.doubts.add(event)
            raise FrameError(
                "unavailable", "the message could not be stored right now; retry", cmid
            ) from exc
        if peer_id is not None:
            # a brand-new direct room: the peer's gateway may not have bound it yet, so the
            # first message also travels on the peer's user key, behind the "joined" event
            try:
                await self.bus.publish_transient(
                    topology.EVENTS, topology.user_key(peer_id), orjson.dumps(event)
                )
            except PublishError:
                pass
        return msg

    async def _direct_room(self, conn: Connection, username: str) -> tuple[str, str | None]:
        """The direct room with ``username``; the peer's id if this send created it."""
        known = self.membership.direct_room_with(conn.user_id, username)
        if known is not None:
            return known, None
        try:
            room, peer_id, staged = await asyncio.to_thread(
                self.store.direct_room, conn.user_id, username
            )
        except LookupError:
            raise FrameError("user_not_found", f"no user {username[:32]!r}") from None
        except ValueError:
            raise FrameError("invalid_frame", "you cannot message yourself") from None
        mine: dict[str, Any] | None = None
        if staged:  # created now: its `joined` here needs no history (whichever copy comes first)
            self.membership.new_rooms.add(room["id"])
        try:
            for exchange, key, body in staged:  # at once; the outbox relay sends them again later
                try:
                    await self.bus.publish(exchange, key, body)
                except PublishError:
                    log.warning("room event not published; the outbox relay will carry it")
                event = orjson.loads(body)
                if event.get("user_id") == conn.user_id:
                    mine = event
            if mine is not None:  # this gateway knows before its echo comes; `joined` first
                self.membership.on_user_event(mine, new_room=True)
            bound = self.membership.bindings.wait([room_key(room["id"])])
            if bound is not None:
                await bound  # bound before the message goes out: the other tabs get it
        finally:
            self.membership.new_rooms.discard(room["id"])
        return room["id"], (peer_id if staged else None)


def send_error(conn: Connection, code: str, message: str, cmid: str | None) -> None:
    metrics.ERRORS.labels(code).inc()
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
    if cmid is not None:
        frame["client_msg_id"] = cmid
    conn.send(frame)
