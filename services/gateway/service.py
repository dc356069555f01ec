"""The gateway: WebSocket sessions, routing between the bus and local sockets, presence.

State is per process and rebuilt from the database at each connect; the hot path (send,
deliver) touches no database: membership lives in memory, kept live by ``room`` events.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import sessionmaker
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.common import events, topology
from services.common.bus import Bus, Delivery, PublishError
from services.common.directory import get_or_create_direct_room, rooms_of_user
from services.common.ids import message_id, new_id, now_ms
from services.common.models import Message, User
from services.common.revocations import load_revoked
from services.common.schema import (
    ID_RE,
    AuthFrame,
    FrameError,
    PingFrame,
    SendFrame,
    TypingFrame,
    message_object,
    parse_frame,
)
from services.common.settings import Settings
from services.common.tokens import AccessClaims, RevocationSet, TokenError, verify_access
from services.gateway import metrics
from services.gateway.connection import Connection
from services.gateway.lru import LRU
from services.gateway.presence import Presence

log = logging.getLogger("chat.gateway")

CLOSE_AUTH = 4001
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_RATE = 4029
CLOSE_RESTART = 1012
CLOSE_TOO_BIG = 1009
SYNC_KEY = "room._sync.msg"
MAX_INFLIGHT = 64


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class GatewayService:
    def __init__(self, settings: Settings, bus: Bus, engine: Engine, revoked: RevocationSet):
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.Session = sessionmaker(engine, expire_on_commit=False)
        self.revoked = revoked
        self.gw = settings.gateway_id
        self.queue = f"gw.{self.gw}"
        self.conns: dict[str, set[Connection]] = {}  # user id -> connections
        self.user_rooms: dict[str, set[str]] = {}  # local user id -> room ids
        self.room_users: dict[str, set[str]] = {}  # room id -> local user ids
        self.rooms: dict[str, dict[str, Any]] = {}  # cached room objects
        self.member_index: dict[str, set[str]] = {}  # username -> cached room ids
        self.seen: LRU[str, None] = LRU(200_000)  # message ids delivered live
        self.acked: LRU[tuple[str, str], dict[str, Any]] = LRU(200_000)
        self.pending: dict[tuple[str, str], asyncio.Future[dict[str, Any] | None]] = {}
        self.markers: dict[str, Connection] = {}
        self.sync_waiters: dict[str, asyncio.Future[None]] = {}
        # per room, the newest sent_ms this gateway has seen: a new message is stamped after
        # it, so a reply is never ordered before the message it answers (same millisecond)
        self.room_clock: dict[str, int] = {}
        self.bound: set[tuple[str, str]] = set()
        self._bind_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self.draining = False
        self.presence = Presence(
            bus,
            self.gw,
            self._presence_changed,
            heartbeat=settings.presence_heartbeat,
            timeout=settings.presence_timeout,
        )
        self.routes: list[BaseRoute] = [
            WebSocketRoute("/ws", self.ws_endpoint),
            Route("/api/presence", self.presence_endpoint, methods=["GET"]),
        ]

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.private_queue(self.queue, self._on_delivery)
        for exchange, key in (
            (topology.EVENTS, topology.SESSION_REVOKED),
            (topology.EVENTS, topology.gateway_key(self.gw)),
            (topology.PRESENCE, ""),
        ):
            await self.bus.bind(self.queue, exchange, key)
        await asyncio.to_thread(load_revoked, self.engine, self.revoked, self.settings.access_ttl)
        self.bus.on_reconnect(self._on_reconnect)
        await self.presence.start()

    async def stop(self) -> None:
        """Stop intake, let in-flight sends finish and queued frames drain, close with 1012."""
        self.draining = True
        every = [c for cs in self.conns.values() for c in cs]
        await asyncio.gather(
            *(
                c.flush_and_close(CLOSE_RESTART, "gateway restarting", self.settings.shutdown_grace)
                for c in every
            ),
            return_exceptions=True,
        )
        await self.presence.stop()

    async def ready(self) -> bool:
        if not self.bus.connected or self.draining:
            return False
        try:
            await asyncio.to_thread(self._ping_db)
        except Exception:
            return False
        return True

    def _ping_db(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    async def _on_reconnect(self) -> None:
        """The broker came back: our queue and bindings were restored, but anything routed
        while we were away is gone from the live stream; tell clients and re-sync them."""
        await asyncio.to_thread(load_revoked, self.engine, self.revoked, self.settings.access_ttl)
        # aio-pika restored the bindings that had succeeded; those asked for while the broker
        # was away failed fast and are applied now, before anyone is told to resync
        for uid in list(self.conns):
            await self._sync_user(uid)
        for rid in list(self.room_users):
            await self._sync_room(rid)
        for cs in list(self.conns.values()):
            for c in list(cs):
                c.send({"type": "resync"})
                await self._publish_marker(c)
        try:
            await self.presence.resend_state()
        except PublishError:
            log.warning("presence state not re-announced after reconnect")

    # bindings ------------------------------------------------------------------------------
    async def _sync_binding(self, exchange: str, key: str, wanted: Callable[[], bool]) -> None:
        ident = (exchange, key)
        lock = self._bind_locks.setdefault(ident, asyncio.Lock())
        async with lock:
            want = wanted()
            try:
                if want and ident not in self.bound:
                    await self.bus.bind(self.queue, exchange, key)
                    self.bound.add(ident)
                elif not want and ident in self.bound:
                    self.bound.discard(ident)
                    try:
                        await self.bus.unbind(self.queue, exchange, key)
                    except PublishError:
                        self.bound.add(ident)  # still bound: a later sync retries
                        raise
            except PublishError:
                log.warning("binding %s %s not changed: broker unavailable", exchange, key)
        if not lock.locked() and not want:
            self._bind_locks.pop(ident, None)

    async def _sync_room(self, room_id: str) -> None:
        await self._sync_binding(
            topology.MESSAGES,
            topology.room_binding(room_id),
            lambda: bool(self.room_users.get(room_id)),
        )

    async def _sync_user(self, user_id: str) -> None:
        await self._sync_binding(
            topology.EVENTS, topology.user_key(user_id), lambda: bool(self.conns.get(user_id))
        )

    # room cache ----------------------------------------------------------------------------
    def _cache_room(self, room: dict[str, Any]) -> None:
        rid = room["id"]
        old = self.rooms.get(rid)
        if old is not None:
            for name in old["members"]:
                self.member_index.get(name, set()).discard(rid)
        self.rooms[rid] = room
        for name in room["members"]:
            self.member_index.setdefault(name, set()).add(rid)

    def _drop_room(self, rid: str) -> None:
        self.room_clock.pop(rid, None)
        old = self.rooms.pop(rid, None)
        if old is not None:
            for name in old["members"]:
                rooms = self.member_index.get(name)
                if rooms is not None:
                    rooms.discard(rid)
                    if not rooms:
                        del self.member_index[name]

    def _join_local(self, user_id: str, room: dict[str, Any]) -> bool:
        """Record a local user's membership (synchronously, before any await). True if new."""
        self._cache_room(room)
        rooms = self.user_rooms.setdefault(user_id, set())
        if room["id"] in rooms:
            return False
        rooms.add(room["id"])
        self.room_users.setdefault(room["id"], set()).add(user_id)
        return True

    def _leave_local(self, user_id: str, room_id: str) -> bool:
        rooms = self.user_rooms.get(user_id)
        if not rooms or room_id not in rooms:
            return False
        rooms.discard(room_id)
        users = self.room_users.get(room_id)
        if users is not None:
            users.discard(user_id)
            if not users:
                del self.room_users[room_id]
                self._drop_room(room_id)
        return True

    def _contacts_online(self, user_id: str, username: str) -> list[str]:
        names: set[str] = set()
        for rid in self.user_rooms.get(user_id, ()):
            room = self.rooms.get(rid)
            if room is not None:
                names.update(room["members"])
        names.discard(username)
        return sorted(n for n in names if self.presence.is_online(n))

    # the WebSocket session -----------------------------------------------------------------
    def _origin_allowed(self, ws: WebSocket) -> bool:
        origin = ws.headers.get("origin")
        if not origin:
            return False
        allowed = self.settings.allowed_origins
        if allowed:  # an explicit allow-list is the whole truth (no Host fallback: DNS rebinding)
            return origin in allowed or "*" in allowed
        host = ws.headers.get("host", "")  # none configured (all-in-one): the page's own origin
        return origin in (f"http://{host}", f"https://{host}")

    async def ws_endpoint(self, ws: WebSocket) -> None:
        if not self._origin_allowed(ws):
            metrics.CLOSED.labels("403").inc()
            await ws.close(code=1008)  # before accept: the server answers 403
            return
        await ws.accept()
        if self.draining:
            await ws.close(CLOSE_RESTART, "gateway restarting")
            return
        s = self.settings
        conn = Connection(ws, s.send_queue_max, s.send_rate_per_sec, s.send_burst)
        claims = await self._authenticate(conn)
        if claims is None:
            return
        try:
            await self._register(conn, claims)
        except Exception:
            log.exception("could not register a connection")
            await conn.stop_writer()
            await ws.close(1011, "internal error")
            return
        try:
            await self._read_loop(conn)
        finally:
            await self._unregister(conn)

    async def _receive_text(self, ws: WebSocket) -> str | None:
        """The next frame as text (binary frames are decoded as UTF-8); None when closed."""
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        if message.get("text") is not None:
            return str(message["text"])
        data = message.get("bytes") or b""
        return data.decode("utf-8", errors="replace")

    async def _authenticate(self, conn: Connection) -> AccessClaims | None:
        ws = conn.ws
        try:
            raw = await asyncio.wait_for(self._receive_text(ws), self.settings.auth_timeout)
        except TimeoutError:
            metrics.CLOSED.labels(str(CLOSE_AUTH_TIMEOUT)).inc()
            await ws.close(CLOSE_AUTH_TIMEOUT, "no auth frame in time")
            return None
        except WebSocketDisconnect:
            return None
        if raw is None:
            return None
        if len(raw) > self.settings.max_frame_bytes:
            await ws.close(CLOSE_TOO_BIG, "frame too big")
            return None
        try:
            frame = parse_frame(raw)
            if not isinstance(frame, AuthFrame):
                raise FrameError("invalid_frame", "the first frame must be auth")
            return verify_access(self.settings, frame.token, self.revoked)
        except (FrameError, TokenError) as exc:
            metrics.CLOSED.labels(str(CLOSE_AUTH)).inc()
            reason = "authenticate first" if isinstance(exc, FrameError) else "invalid token"
            await ws.close(CLOSE_AUTH, reason)
            return None

    async def _register(self, conn: Connection, claims: AccessClaims) -> None:
        conn.user_id, conn.username, conn.sid = claims.user_id, claims.username, claims.sid
        rooms = await asyncio.to_thread(self._load_rooms, claims.user_id)
        conn.hold()  # live frames that arrive before `ready` wait behind it
        self.conns.setdefault(conn.user_id, set()).add(conn)
        for room in rooms:
            self._join_local(conn.user_id, room)
        await self._sync_user(conn.user_id)
        for room in rooms:
            await self._sync_room(room["id"])
        metrics.CONNECTIONS.inc()
        await self.presence.connected(conn.username)
        if claims.sid in self.revoked:  # logged out while we were loading
            conn.close_soon(CLOSE_AUTH, "session revoked")
            return
        conn.release_with(
            {
                "type": "ready",
                "user": {"id": conn.user_id, "username": conn.username},
                "rooms": rooms,
                "online": self._contacts_online(conn.user_id, conn.username),
                "gateway": self.gw,
                "server_time": now_ms(),
            }
        )
        await self._publish_marker(conn)

    def _load_rooms(self, user_id: str) -> list[dict[str, Any]]:
        with self.Session() as session:
            return rooms_of_user(session, user_id)

    async def _publish_marker(self, conn: Connection) -> None:
        """Ask the history writer to tell us when everything routed before now is stored."""
        marker = new_id()
        self.markers[marker] = conn
        body = orjson.dumps({"type": "marker", "marker": marker, "gw": self.gw})
        try:
            await self.bus.publish(
                topology.MESSAGES, SYNC_KEY, body, mandatory=True, persistent=True
            )
        except PublishError:
            self.markers.pop(marker, None)
            log.warning("sync marker not published (broker unavailable)")

    async def _writer_caught_up(self, timeout: float) -> bool:
        """True once the history writer has committed everything routed before this call."""
        marker = new_id()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sync_waiters[marker] = future
        body = orjson.dumps({"type": "marker", "marker": marker, "gw": self.gw})
        try:
            await self.bus.publish(
                topology.MESSAGES, SYNC_KEY, body, mandatory=True, persistent=True
            )
            await asyncio.wait_for(future, timeout)
            return True
        except (PublishError, TimeoutError):
            return False
        finally:
            self.sync_waiters.pop(marker, None)

    async def _unregister(self, conn: Connection) -> None:
        await conn.stop_writer()
        for marker in [m for m, c in self.markers.items() if c is conn]:
            del self.markers[marker]
        if not conn.user_id:
            return
        metrics.CONNECTIONS.dec()
        conns = self.conns.get(conn.user_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self.conns[conn.user_id]
                for rid in list(self.user_rooms.pop(conn.user_id, set())):
                    users = self.room_users.get(rid)
                    if users is not None:
                        users.discard(conn.user_id)
                        if not users:
                            del self.room_users[rid]
                            self._drop_room(rid)
                    await self._sync_room(rid)
                await self._sync_user(conn.user_id)
        await self.presence.disconnected(conn.username)

    async def _read_loop(self, conn: Connection) -> None:
        ws, s = conn.ws, self.settings
        while not conn.closed:
            try:
                raw = await self._receive_text(ws)
            except (WebSocketDisconnect, RuntimeError):
                return
            if raw is None:
                return
            if len(raw.encode()) > s.max_frame_bytes:
                metrics.CLOSED.labels(str(CLOSE_TOO_BIG)).inc()
                conn.close_after_queued(CLOSE_TOO_BIG, "frame too big")
                return
            if self.draining:
                continue  # intake stopped; the close with 1012 is coming
            if not conn.bucket.take():
                conn.strikes += 1
                cmid = _peek_cmid(raw)
                self._send_error(conn, "rate_limited", "slow down", cmid)
                if conn.strikes >= s.rate_strikes_before_close:
                    metrics.CLOSED.labels(str(CLOSE_RATE)).inc()
                    conn.close_after_queued(CLOSE_RATE, "rate limit exceeded")
                    return
                continue
            try:
                frame = parse_frame(raw)
            except FrameError as exc:
                self._send_error(conn, exc.code, exc.message, exc.client_msg_id)
                continue
            if isinstance(frame, SendFrame):
                if len(conn.inflight) >= MAX_INFLIGHT:
                    self._send_error(
                        conn, "rate_limited", "too many unacknowledged sends", frame.client_msg_id
                    )
                    continue
                task = asyncio.get_running_loop().create_task(self._handle_send(conn, frame))
                conn.inflight.add(task)
                task.add_done_callback(conn.inflight.discard)
            elif isinstance(frame, TypingFrame):
                await self._handle_typing(conn, frame)
            elif isinstance(frame, PingFrame):
                conn.send({"type": "pong"})
            else:  # a second auth frame
                self._send_error(conn, "invalid_frame", "already authenticated", None)

    def _send_error(self, conn: Connection, code: str, message: str, cmid: str | None) -> None:
        metrics.ERRORS.labels(code).inc()
        frame: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if cmid is not None:
            frame["client_msg_id"] = cmid
        conn.send(frame)

    # sending -------------------------------------------------------------------------------
    async def _handle_send(self, conn: Connection, frame: SendFrame) -> None:
        started = time.perf_counter()
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
                self._send_error(conn, exc.code, exc.message, frame.client_msg_id)
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
            self._send_error(conn, exc.code, exc.message, frame.client_msg_id)
            return
        except Exception as exc:
            log.exception("send failed")
            err = FrameError("unavailable", "the message could not be accepted; retry")
            future.set_exception(err)
            future.exception()
            self._send_error(conn, err.code, err.message, frame.client_msg_id)
            del exc
            return
        finally:
            self.pending.pop(key, None)
        future.set_result(msg)
        self.acked.put(key, msg)
        metrics.ACCEPTED.inc()
        metrics.SEND_SECONDS.observe(time.perf_counter() - started)
        conn.send({"type": "ack", "client_msg_id": frame.client_msg_id, "message": msg})

    async def _accept(self, conn: Connection, frame: SendFrame) -> dict[str, Any]:
        peer_id: str | None = None
        if frame.to is not None:
            room_id, peer_id = await self._direct_room(conn, frame.to)
        else:
            room_id = frame.room or ""
            if not ID_RE.match(room_id):
                raise FrameError("room_not_found", "no such room", frame.client_msg_id)
            if room_id not in self.user_rooms.get(conn.user_id, ()):
                raise FrameError(
                    "not_a_member", "you are not a member of this room", frame.client_msg_id
                )
        mid = message_id(conn.user_id, frame.client_msg_id)
        if frame.retry:
            stored = await asyncio.to_thread(self._stored_message, mid, conn.user_id)
            if stored is None:
                # the first attempt may still be on its way to history (its answer was lost or
                # `unavailable`): let the writer pass everything routed before now, look again
                if not await self._writer_caught_up(5.0):
                    raise FrameError(
                        "unavailable",
                        "history is catching up; retry in a moment",
                        frame.client_msg_id,
                    )
                stored = await asyncio.to_thread(self._stored_message, mid, conn.user_id)
            if stored is not None:
                return stored
        sent = max(now_ms(), self.room_clock.get(room_id, 0) + 1)
        self.room_clock[room_id] = sent
        msg = message_object(mid, room_id, conn.username, frame.body, sent, frame.client_msg_id)
        body = orjson.dumps(
            {
                "type": "message",
                "message": msg,
                "sender_id": conn.user_id,
                "sent_ms": sent,
                "origin": {"gw": self.gw, "conn": conn.id},
            }
        )
        try:
            await self.bus.publish(
                topology.MESSAGES,
                topology.room_msg_key(room_id),
                body,
                mandatory=True,
                persistent=True,
            )
        except PublishError as exc:
            log.warning("publish failed: %s", exc)
            raise FrameError(
                "unavailable",
                "the message could not be stored right now; retry",
                frame.client_msg_id,
            ) from exc
        if peer_id is not None:
            # a brand-new direct room: the peer's gateway may not have bound it yet, so the
            # first message also travels on the peer's user key, behind the "joined" event
            try:
                await self.bus.publish(topology.EVENTS, topology.user_key(peer_id), body)
            except PublishError:
                pass
        return msg

    def _stored_message(self, mid: str, user_id: str) -> dict[str, Any] | None:
        with self.Session() as session:
            row = session.get(Message, mid)
            if row is None or row.sender_id != user_id:
                return None
            return message_object(
                row.id, row.room_id, row.sender, row.body, row.sent_ms, row.client_msg_id
            )

    async def _direct_room(self, conn: Connection, username: str) -> tuple[str, str | None]:
        """The direct room with ``username``; the peer's id if this send created it."""
        for rid in self.user_rooms.get(conn.user_id, ()):
            cached = self.rooms.get(rid)
            if (
                cached
                and cached["kind"] == "direct"
                and username in cached["members"]
                and username != conn.username
            ):
                return rid, None
        try:
            room, created, peer_id = await asyncio.to_thread(
                self._create_direct, conn.user_id, username
            )
        except LookupError:
            raise FrameError("user_not_found", f"no user {username[:32]!r}") from None
        except ValueError:
            raise FrameError("invalid_frame", "you cannot message yourself") from None
        if created:
            for uid in (peer_id, conn.user_id):
                try:
                    await self.bus.publish(*events.room_event("joined", uid, room))
                except PublishError:
                    log.warning("room event not published; the outbox relay will carry it")
        new = self._join_local(conn.user_id, room)
        await self._sync_room(room["id"])  # bound before anyone is told (see _apply_room_event)
        if new:
            self._tell(conn.user_id, "joined", room)
        return room["id"], (peer_id if created else None)

    def _create_direct(self, user_id: str, username: str) -> tuple[dict[str, Any], bool, str]:
        with self.Session() as session:
            room, created = get_or_create_direct_room(session, user_id, username)
            peer = session.execute(select(User.id).where(User.username == username)).scalar_one()
            return room, created, peer

    async def _handle_typing(self, conn: Connection, frame: TypingFrame) -> None:
        if frame.room not in self.user_rooms.get(conn.user_id, ()):
            self._send_error(conn, "not_a_member", "you are not a member of this room", None)
            return
        body = orjson.dumps(
            {
                "type": "typing",
                "room": frame.room,
                "username": conn.username,
                "user_id": conn.user_id,
                "origin": {"gw": self.gw, "conn": conn.id},
            }
        )
        try:
            await self.bus.publish(topology.MESSAGES, topology.room_typing_key(frame.room), body)
        except PublishError:
            pass  # typing is ephemeral

    # deliveries from the bus ---------------------------------------------------------------
    async def _on_delivery(self, d: Delivery) -> None:
        try:
            if d.exchange == topology.PRESENCE:
                await self.presence.handle(d)
                return
            event = orjson.loads(d.body)
            if not isinstance(event, dict):
                return
            kind = event.get("type")
            if kind == "message":
                self._deliver_message(event)
            elif kind == "typing":
                self._deliver_typing(event)
            elif kind == "room":
                await self._apply_room_event(event["event"], event["user_id"], event["room"])
            elif kind == "session_revoked":
                self._revoke(event)
            elif kind == "synced":
                marker = str(event.get("marker"))
                conn = self.markers.pop(marker, None)
                if conn is not None:
                    conn.send({"type": "synced"})
                waiter = self.sync_waiters.get(marker)
                if waiter is not None and not waiter.done():
                    waiter.set_result(None)
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed event on %s", d.routing_key)

    def _deliver_message(self, event: dict[str, Any]) -> None:
        msg = event["message"]
        if not self.seen.add_new(msg["id"], None):
            return  # a retried or doubly routed message: each socket gets it once
        self.acked.put((event["sender_id"], msg["client_msg_id"]), msg)
        sent = event.get("sent_ms")
        if isinstance(sent, int) and sent > self.room_clock.get(msg["room"], 0):
            self.room_clock[msg["room"]] = sent
        origin = event.get("origin") or {}
        skip = origin.get("conn") if origin.get("gw") == self.gw else None
        text = orjson.dumps({"type": "message", "message": msg}).decode()
        sent = 0
        for uid in self.room_users.get(msg["room"], ()):
            for c in self.conns.get(uid, ()):
                if c.id != skip:
                    c.send_text(text)
                    sent += 1
        if sent:
            metrics.DELIVERED.inc(sent)

    def _deliver_typing(self, event: dict[str, Any]) -> None:
        text = orjson.dumps(
            {"type": "typing", "room": event["room"], "username": event["username"]}
        ).decode()
        for uid in self.room_users.get(event["room"], ()):
            if uid == event.get("user_id"):
                continue
            for c in self.conns.get(uid, ()):
                c.send_text(text)

    async def _apply_room_event(self, kind: str, user_id: str, room: dict[str, Any]) -> None:
        conns = self.conns.get(user_id)
        rid = room["id"]
        if kind == "joined":
            if conns:
                before = self.rooms.get(rid)
                new = self._join_local(user_id, room)
                # bound before the client hears of the room: a message its members send once
                # they see it joined must reach this gateway. (A message routed here while
                # another bind of the same room is in flight can reach the client just ahead
                # of its "joined" frame; clients take messages of rooms they do not know yet.)
                await self._sync_room(rid)
                if new:
                    self._tell(user_id, "joined", room)
                elif before != room:
                    self._tell(user_id, "updated", room)
        elif kind == "left":
            if conns and self._leave_local(user_id, rid):
                self._tell(user_id, "left", room)
                await self._sync_room(rid)
        elif kind == "updated":
            if rid in self.rooms:
                before = self.rooms.get(rid)
                self._cache_room(room)
                if conns and rid in self.user_rooms.get(user_id, ()) and before != room:
                    self._tell(user_id, "updated", room)

    def _tell(self, user_id: str, event: str, room: dict[str, Any]) -> None:
        online = (
            [n for n in room["members"] if self.presence.is_online(n)] if event != "left" else []
        )
        for c in self.conns.get(user_id, ()):
            c.send({"type": "room", "event": event, "room": room})
            for name in online:  # new contacts: say who of them is online
                if name != c.username:
                    c.send({"type": "presence", "username": name, "online": True})

    def _revoke(self, event: dict[str, Any]) -> None:
        sid = str(event["sid"])
        self.revoked.add(sid, float(event["until"]))
        for c in list(self.conns.get(str(event.get("user_id")), ())):
            if c.sid == sid:
                metrics.CLOSED.labels(str(CLOSE_AUTH)).inc()
                c.close_soon(CLOSE_AUTH, "session ended")

    async def _presence_changed(self, username: str, online: bool) -> None:
        frame = orjson.dumps({"type": "presence", "username": username, "online": online}).decode()
        told: set[str] = set()
        for rid in self.member_index.get(username, ()):
            for uid in self.room_users.get(rid, ()):
                if uid in told:
                    continue
                told.add(uid)
                for c in self.conns.get(uid, ()):
                    if c.username != username:
                        c.send_text(frame)

    # REST: presence ------------------------------------------------------------------------
    async def presence_endpoint(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        token = auth[7:] if auth[:7].lower() == "bearer " else ""
        try:
            verify_access(self.settings, token, self.revoked)
        except TokenError:
            resp = _error("invalid_token", "a valid bearer token is required", 401)
            resp.headers["WWW-Authenticate"] = "Bearer"
            return resp
        users = request.query_params.get("users")
        if users is not None:
            names = [u.strip().lower() for u in users.split(",") if u.strip()]
            if len(names) > 1000:
                return _error("invalid_request", "at most 1000 users per call", 422)
            return JSONResponse(
                {"online": [n for n in dict.fromkeys(names) if self.presence.is_online(n)]}
            )
        cursor = request.query_params.get("cursor", "")
        everyone = [u for u in self.presence.online_users() if u > cursor]
        page = everyone[:1000]
        body: dict[str, Any] = {"online": page}
        if len(everyone) > 1000:
            body["cursor"] = page[-1]
        return JSONResponse(body)


def _peek_cmid(raw: str) -> str | None:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, dict) and isinstance(data.get("client_msg_id"), str):
        return str(data["client_msg_id"])[:64]
    return None


StartStop = Callable[[], Awaitable[None]]
