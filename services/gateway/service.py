"""The gateway: WebSocket sessions, routing between the bus and local sockets, presence.

The hot path (send, deliver) touches no database: membership lives in memory
(``membership.Membership``), kept live by events and re-read whenever it may have missed one.
The parts:

- ``membership``: which local users are in which rooms (events, re-reads, recovery);
- ``bindings``: the gateway queue's bindings, reference-counted and pipelined;
- ``sending``: a ``send`` frame to its ``ack`` (and an ``edit``/``delete``: ``changes``);
  ``sync``: the resume rule's markers; ``recent``: what was delivered here lately;
- ``presence`` (who is online across gateways) and ``fanout`` (who hears of it, batched);
- ``connection``: one socket's bounded queue and rate limit.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson
from sqlalchemy.engine import Engine
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.common import config as cluster_config
from services.common import readstate, topology
from services.common.bus import Bus, Delivery, PublishError
from services.common.config import HistoryConfig
from services.common.ids import change_id, now_ms, parse_ms
from services.common.revocations import load_revoked
from services.common.schema import (
    AuthFrame,
    ChangeFrame,
    FrameError,
    PingFrame,
    PresenceSubFrame,
    ReadFrame,
    SendFrame,
    TypingFrame,
    parse_frame,
)
from services.common.settings import Settings
from services.common.tokens import AccessClaims, RevocationSet, TokenError, verify_access
from services.gateway import metrics
from services.gateway.bindings import Bindings
from services.gateway.changes import Changes, change_key
from services.gateway.connection import Connection
from services.gateway.doubts import Doubts
from services.gateway.lru import LRU, AckCache
from services.gateway.membership import Membership, UserState
from services.gateway.presence import Presence
from services.gateway.publisher import Publisher
from services.gateway.reads import ReadSync
from services.gateway.recent import CHANGED_MAX, EARLY_MAX, EARLY_WINDOW_MS, SEEN_MAX, Recent
from services.gateway.sending import Sender, send_error
from services.gateway.store import GatewayStore
from services.gateway.sync import SyncMarkers

log = logging.getLogger("chat.gateway")

CLOSE_AUTH = 4001
CLOSE_AUTH_TIMEOUT = 4008
CLOSE_RATE = 4029
CLOSE_RESTART = 1012
CLOSE_TOO_BIG = 1009
MAX_INFLIGHT = 64
JOINED_WAIT = 3.0  # seconds a `joined` waits at most for its room's history shard


def _error(code: str, message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


class GatewayService:
    def __init__(self, settings: Settings, bus: Bus, engine: Engine, revoked: RevocationSet):
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.store = GatewayStore(engine)
        self.revoked = revoked
        self.gw = settings.gateway_id
        self.queue = f"gw.{self.gw}"
        self.bindings = Bindings(bus, self.queue)
        self.fixed_keys = [  # bound for the gateway's whole life, first after a reconnect
            (topology.EVENTS, topology.USER_EVENTS),
            (topology.EVENTS, topology.SESSION_REVOKED),
            (topology.EVENTS, topology.gateway_key(self.gw)),
            (topology.EVENTS, cluster_config.CONFIG_KEY),
            (topology.PRESENCE, ""),
        ]
        self.presence = Presence(
            bus,
            self.gw,
            self._presence_changed,
            heartbeat=settings.presence_heartbeat,
            timeout=settings.presence_timeout,
        )
        self.membership = Membership(
            self.store,
            self.bindings,
            self.presence.is_online,
            presence_batch=settings.presence_batch_ms / 1000,
            on_resync=self._resync_user,
        )
        self.history = HistoryConfig(settings.history_shards)  # read from the database at start
        self.markers = SyncMarkers(bus, self.gw, lambda: self.history.shards)
        self.membership.before_joined = self._room_caught_up
        self.acked = AckCache(settings.ack_cache_bytes)
        # message ids delivered here -> what is known of them (recent.py): a retried message
        # goes out once, a `read` of a message just delivered needs no history lookup, and an
        # edit of a message acked a moment ago is authorized before history stores it
        self.seen: LRU[str, Recent] = LRU(SEEN_MAX)
        self.changed: LRU[str, bool] = LRU(CHANGED_MAX)  # change ids delivered here (once each)
        # recent messages changed before they were delivered here (another gateway's change
        # overtook the message's own live copy): delivered as changed when they come
        self.early: LRU[str, dict[str, Any]] = LRU(EARLY_MAX)
        self.publisher = Publisher(bus, lambda: self.history.shards, self._deliver_entry)
        self.sender = Sender(
            bus, self.gw, self.store, self.membership, self.markers, self.acked, self.publisher
        )
        self.sender.doubts = Doubts(
            bus, self.store, self.markers, lambda: self.history.shards, self._deliver_entry
        )
        self.sender.changes = Changes(
            self.gw,
            self.store,
            self.membership,
            self.markers,
            self.publisher,
            self.seen.get,
            lambda: self.history.shards,
        )
        self.sender.changes.doubts = self.sender.doubts
        self.reads = ReadSync(
            bus, self.gw, self.store, self.membership, self._position, self.presence.gateways_of
        )
        self.draining = False
        self._recovering: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        metrics.ACK_CACHE_BYTES.set_function(lambda: self.acked.bytes)
        metrics.BINDINGS.set_function(lambda: len(self.bindings))
        metrics.LOCAL_ROOMS.set_function(lambda: len(self.membership.rooms))
        metrics.LOCAL_USERS.set_function(lambda: len(self.membership.users))
        self.routes: list[BaseRoute] = [
            WebSocketRoute("/ws", self.ws_endpoint),
            Route("/api/presence", self.presence_endpoint, methods=["GET"]),
        ]

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self.bus.private_queue(self.queue, self._on_delivery)
        self.bindings.start()
        fixed = self.bindings.acquire(self.fixed_keys)
        if fixed is not None and not await fixed:
            raise PublishError("could not bind the gateway's queue")
        await asyncio.to_thread(load_revoked, self.engine, self.revoked, self.settings.access_ttl)
        cfg = await asyncio.to_thread(
            cluster_config.load, self.engine, self.settings.history_shards
        )
        await self.bus.declare_history(cfg.shards)
        self._apply_config(cfg)
        self.bus.on_disconnect(self._on_disconnect)
        self.bus.on_reconnect(self._on_reconnect)
        await self.presence.start()

    async def stop(self) -> None:
        """Stop intake, let in-flight sends finish and queued frames drain, close with 1012."""
        self.draining = True
        every = [c for us in self.membership.users.values() for c in us.conns]
        await asyncio.gather(
            *(
                c.flush_and_close(CLOSE_RESTART, "gateway restarting", self.settings.shutdown_grace)
                for c in every
            ),
            return_exceptions=True,
        )
        if self._recovering is not None:
            self._recovering.cancel()
        if self.sender.doubts is not None:
            self.sender.doubts.stop()
        await self.presence.stop()
        await self.bindings.stop()

    async def ready(self) -> bool:
        if not self.bus.connected or self.draining:
            return False
        try:
            await asyncio.to_thread(self.store.ping)
        except Exception:
            return False
        return True

    # broker reconnects: re-read everything before relaying anything more --------------------
    async def _on_disconnect(self) -> None:
        self.membership.trusted = False  # trust nothing until the recovery has re-read it

    async def _on_reconnect(self) -> None:
        """The broker came back: our queue is new (bound to nothing) and whatever was routed
        while we were away is gone. Bind the gateway's own keys (users' events among them),
        re-read membership and revocations, close revoked sockets, then tell every client to
        resync (each gets ``synced`` once its rooms are bound again). Retried until it
        succeeds, whatever else is down."""
        if self._recovering is not None and not self._recovering.done():
            self._recovering.cancel()
        self._recovering = asyncio.get_running_loop().create_task(self._recover())

    async def _recover(self) -> None:
        held = self.membership.begin_recovery()
        delay = 0.2
        done = False
        try:
            while True:
                try:
                    self.bindings.restore()
                    fixed = self.bindings.wait(self.fixed_keys)
                    if fixed is not None and not await fixed:
                        raise PublishError("the gateway's own bindings are not in place")
                    await self.membership.recover()
                    await asyncio.to_thread(
                        load_revoked, self.engine, self.revoked, self.settings.access_ttl
                    )
                    self._apply_config(
                        await asyncio.to_thread(
                            cluster_config.load, self.engine, self.settings.history_shards
                        )
                    )
                    done = True
                    break
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("recovery after reconnect failed (%s); retrying", exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 5.0)
        finally:  # cancelled: a newer recovery takes over (and stays untrusted until it ends)
            self.membership.end_recovery(held, trusted=done)
        self._close_revoked()
        log.info("membership re-read after a broker reconnect; clients resync")
        await asyncio.gather(
            *(self._resync_user(us) for us in list(self.membership.users.values())),
            return_exceptions=True,
        )
        try:
            await self.presence.resend_state()
        except PublishError:
            log.warning("presence state not re-announced after reconnect")
        self._recovering = None

    async def _room_caught_up(self, room_id: str) -> None:
        """The room's history shard has committed what was routed to it before now (bounded: a
        writer that does not answer in time delays a `joined` by at most JOINED_WAIT)."""
        shard = topology.shard_of(room_id, self.history.shards)
        await self.markers.passed(shard, JOINED_WAIT)

    def _close_revoked(self) -> None:
        for us in list(self.membership.users.values()):
            for c in list(us.conns):
                if c.sid in self.revoked:
                    metrics.CLOSED.labels(str(CLOSE_AUTH)).inc()
                    c.close_soon(CLOSE_AUTH, "session ended")

    async def _resync_user(self, us: UserState) -> None:
        """Live messages may have been withheld: the client fetches what it missed, once
        ``synced`` says history holds it (the marker goes out once the rooms are bound)."""
        conns = [c for c in us.conns if not c.closed]
        for c in conns:
            c.send({"type": "resync"})
        if await self.membership.wait_bound(us):
            await asyncio.gather(*(self.markers.publish(c) for c in conns))

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
            self.membership.detach(conn)
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
        conn.hold()  # live frames that arrive before `ready` wait behind it
        rooms = await self.membership.attach(conn)
        rooms = await self._with_read_state(conn, rooms)
        metrics.CONNECTIONS.inc()
        await self.presence.connected(conn.username)
        if claims.sid in self.revoked:  # logged out while we were loading
            conn.close_soon(CLOSE_AUTH, "session revoked")
            return
        us = self.membership.users[conn.user_id]
        conn.release_with(
            {
                "type": "ready",
                "user": {"id": conn.user_id, "username": conn.username},
                "rooms": rooms,
                "online": self.membership.contacts_online(us),
                "gateway": self.gw,
                "server_time": now_ms(),
            }
        )
        # the resume rule: "synced" says history holds everything the live stream missed,
        # so the marker goes out only once every room of the connection is bound here
        self._spawn(self._synced_when_bound(us, conn))

    async def _with_read_state(
        self, conn: Connection, rooms: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """The caller's copies of the room objects: ``last_read``, ``unread``, ``muted``; the
        positions are remembered (a read frame that does not move one costs no write)."""
        view = await asyncio.to_thread(self.store.read_view, conn.user_id, [r["id"] for r in rooms])
        us = self.membership.users.get(conn.user_id)
        out = []
        for obj in rooms:
            st, unread = view.get(obj["id"], (None, 0))
            out.append(readstate.with_state(obj, st, unread))
            if us is not None and st is not None and st.last_read_id is not None:
                self.reads.remember(us, obj["id"], st.position)
        return out

    async def _synced_when_bound(self, us: UserState, conn: Connection) -> None:
        if await self.membership.wait_bound(us):
            await self.markers.publish(conn)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _unregister(self, conn: Connection) -> None:
        await conn.stop_writer()
        self.membership.fanout.forget(conn)
        if not conn.user_id or conn.user_id not in self.membership.users:
            return
        metrics.CONNECTIONS.dec()
        self.membership.detach(conn)
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
                send_error(conn, "rate_limited", "slow down", _peek_cmid(raw))
                if conn.strikes >= s.rate_strikes_before_close:
                    metrics.CLOSED.labels(str(CLOSE_RATE)).inc()
                    conn.close_after_queued(CLOSE_RATE, "rate limit exceeded")
                    return
                continue
            try:
                frame = parse_frame(raw)
            except FrameError as exc:
                send_error(conn, exc.code, exc.message, exc.client_msg_id)
                continue
            if isinstance(frame, SendFrame | ChangeFrame):
                if len(conn.inflight) >= MAX_INFLIGHT:
                    send_error(
                        conn, "rate_limited", "too many unacknowledged sends", frame.client_msg_id
                    )
                    continue
                task = asyncio.get_running_loop().create_task(self.sender.handle(conn, frame))
                conn.inflight.add(task)
                task.add_done_callback(conn.inflight.discard)
            elif isinstance(frame, TypingFrame):
                await self._handle_typing(conn, frame)
            elif isinstance(frame, PresenceSubFrame):
                self.membership.fanout.subscribe(conn, frame.users)
            elif isinstance(frame, ReadFrame):
                try:
                    await self.reads.handle(conn, frame)
                except FrameError as exc:
                    send_error(conn, exc.code, exc.message, None)
            elif isinstance(frame, PingFrame):
                conn.send({"type": "pong"})
            else:  # a second auth frame
                send_error(conn, "invalid_frame", "already authenticated", None)

    async def _handle_typing(self, conn: Connection, frame: TypingFrame) -> None:
        if not self.membership.is_member(conn.user_id, frame.room):
            send_error(conn, "not_a_member", "you are not a member of this room", None)
            return
        if not self.membership.may_act(conn.user_id):
            return  # typing is ephemeral
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
        """Everything here is applied synchronously, in delivery order (no await before the
        state changes): membership events and messages keep their relative order."""
        try:
            if d.exchange == topology.PRESENCE:
                await self.presence.handle(d)
                return
            event = orjson.loads(d.body)
            if not isinstance(event, dict):
                return
            kind = event.get("type")
            if kind == "live":  # another gateway's messages (history has them already)
                for entry in event["messages"]:
                    self._deliver_entry(entry)
            elif kind in ("message", "edit", "delete"):
                self._deliver_entry(event)
            elif kind == "typing":
                self._deliver_typing(event)
            elif kind == "room":
                self.membership.on_user_event(event)
            elif kind == "member":
                self.membership.on_room_event(event)
            elif kind == "session_revoked":
                self._revoke(event)
            elif kind == "read":
                self.reads.on_read(event)
            elif kind == "muted":
                self.reads.on_muted(event)
            elif kind == "synced":
                self.markers.answered(str(event.get("marker")), int(event.get("shard", 0)))
            elif kind == "history_config":
                self._apply_config(HistoryConfig.parse(event))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed event on %s", d.routing_key)

    def _position(self, message_id: str) -> tuple[str, int] | None:
        """(room id, sent_ms) of a message delivered here lately (reads.py)."""
        rec = self.seen.get(message_id)
        return None if rec is None else (rec.room, rec.sent_ms)

    def _deliver_entry(self, event: dict[str, Any]) -> None:
        """A history entry accepted here (once confirmed) or by another gateway: a message,
        or an edit or a delete of one."""
        if event.get("type") in ("edit", "delete"):
            self._deliver_change(event)
        else:
            self._deliver_message(event)

    def _deliver_message(self, event: dict[str, Any]) -> None:
        msg = event["message"]
        sent = event.get("sent_ms")
        if not isinstance(sent, int):
            sent = parse_ms(msg["sent_at"])
        if msg["id"] in self.seen:
            return  # a retried or doubly routed message: each socket gets it once
        rec = Recent.of(event, sent)
        self.seen.put(msg["id"], rec)
        later = self.early.pop(msg["id"])
        if later is not None:  # its change came first: never show the older text after it
            msg = later
            rec.deleted = bool(later.get("deleted"))
            if isinstance(later.get("edited_at"), str):
                rec.edited_ms = parse_ms(later["edited_at"])
        self.acked.put((event["sender_id"], msg["client_msg_id"]), msg)
        room = self.membership.rooms.get(msg["room"])
        if room is None:
            return
        if sent > room.clock:
            room.clock = sent
        self._fan_out(room.id, {"type": "message", "message": msg}, event)

    def _deliver_change(self, event: dict[str, Any]) -> None:
        """``message_changed`` to the room's members here (but the author's connection that
        sent it: it has the ack), once per change; what is remembered of the message and of
        its ack follows the change (a retried send is not answered with a deleted body)."""
        msg = event["message"]
        actor, cmid = str(event["actor_id"]), str(event["client_msg_id"])
        if not self.changed.add_new(change_id(actor, cmid), True):
            return
        self.acked.put(change_key(actor, cmid), msg)
        rec = self.seen.get(msg["id"])
        if rec is not None:
            rec.deleted = bool(msg.get("deleted"))
            edited = msg.get("edited_at")
            if isinstance(edited, str):
                rec.edited_ms = parse_ms(edited)
        elif parse_ms(msg["sent_at"]) > now_ms() - EARLY_WINDOW_MS:
            self.early.put(msg["id"], msg)  # a recent message not seen here yet
        sender_id = event.get("sender_id")
        if isinstance(sender_id, str):
            self.acked.replace((sender_id, str(msg["client_msg_id"])), msg)
        if msg["room"] in self.membership.rooms:
            self._fan_out(msg["room"], {"type": "message_changed", "message": msg}, event)

    def _fan_out(self, room_id: str, frame: dict[str, Any], event: dict[str, Any]) -> None:
        """``frame`` to every connection here of the room's members, once, but the connection
        that sent ``event`` (it has its ack)."""
        origin = event.get("origin") or {}
        skip = origin.get("conn") if origin.get("gw") == self.gw else None
        text = orjson.dumps(frame).decode()
        n = 0
        for c in self.membership.recipients(room_id):
            if c.id != skip:
                c.send_text(text)
                n += 1
        if n:
            metrics.DELIVERED.inc(n)

    def _deliver_typing(self, event: dict[str, Any]) -> None:
        text = orjson.dumps(
            {"type": "typing", "room": event["room"], "username": event["username"]}
        ).decode()
        sender = event.get("user_id")
        for c in self.membership.recipients(event["room"]):
            if c.user_id != sender:
                c.send_text(text)

    # the history shards (python -m services reshard) ---------------------------------------------
    def _apply_config(self, cfg: HistoryConfig) -> None:
        if cfg.epoch < self.history.epoch:
            return  # an older announcement
        was_paused = self.history.paused
        self.history = cfg
        self.sender.config = cfg
        if cfg.paused and not was_paused:
            self._spawn(self._ack_pause(cfg))
        elif not cfg.paused:
            log.info("history: %d shards (epoch %d)", cfg.shards, cfg.epoch)

    async def _ack_pause(self, cfg: HistoryConfig) -> None:
        """No new message goes to history from here; once the ones in flight are confirmed,
        say so (the reshard tool waits for every gateway's word before it drains)."""
        while self.sender.pending:  # every send in flight checked `paused` before it began
            await asyncio.gather(*list(self.sender.pending.values()), return_exceptions=True)
        body = orjson.dumps({"type": "config_ack", "gw": self.gw, "epoch": cfg.epoch})
        for _ in range(50):
            try:
                await self.bus.publish(topology.EVENTS, cluster_config.ACK_KEY, body)
                log.info("history paused (epoch %d): no sends until it resumes", cfg.epoch)
                return
            except PublishError:
                await asyncio.sleep(0.2)

    def _revoke(self, event: dict[str, Any]) -> None:
        sid = str(event["sid"])
        self.revoked.add(sid, float(event["until"]))
        us = self.membership.users.get(str(event.get("user_id")))
        for c in list(us.conns if us is not None else ()):
            if c.sid == sid:
                metrics.CLOSED.labels(str(CLOSE_AUTH)).inc()
                c.close_soon(CLOSE_AUTH, "session ended")

    async def _presence_changed(self, username: str, online: bool) -> None:
        self.membership.fanout.changed(username, online)

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
