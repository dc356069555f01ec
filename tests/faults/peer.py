"""A chat client that reconnects by itself and follows the resume rule of docs/PROTOCOL.md (the
same rule as web/js/sync.js):

- after ``ready``, wait for ``{"type":"synced"}`` (history is complete up to the moment this live
  stream began); on ``{"type":"resync"}`` (the gateway lost the broker) wait for the next one;
- on every ``synced``, per room: GET /api/history/{room}?after=<cursor>&limit=200 until
  ``has_more`` is false, merge by id; the cursor moves only with pages fetched while synced
  (live messages never move it);
- on a lost connection, reconnect to the next gateway (what a load balancer would do).

It records what a test needs to judge: every live delivery per connection (a duplicate on one
connection is a bug), the merged view per room, and the time of every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import weakref
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from services.common.ids import now_ms
from tests.faults.seed import Seeded
from tests.support.client import TEST_ORIGIN


def _ms(iso: str) -> int:
    """Milliseconds since the epoch of an API timestamp (2026-11-23T10:15:30.123Z)."""
    return int(datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp() * 1000 + 0.5)


# History requests in flight per shared HTTP client. A thousand clients catching up at once would
# otherwise queue a thousand requests in one httpx pool, whose every event scans the whole queue
# against every connection (seen with py-spy: a quarter of this process's CPU in a reconnect
# storm, enough to time out WebSocket handshakes of the test's own clients).
HTTP_IN_FLIGHT = 48
_http_slots: weakref.WeakKeyDictionary[httpx.AsyncClient, asyncio.Semaphore] = (
    weakref.WeakKeyDictionary()
)


def http_slots(http: httpx.AsyncClient) -> asyncio.Semaphore:
    slots = _http_slots.get(http)
    if slots is None:
        slots = _http_slots[http] = asyncio.Semaphore(HTTP_IN_FLIGHT)
    return slots


class NotConnected(Exception):
    pass


class Peer:
    def __init__(
        self,
        user: Seeded,
        gateways: Callable[[], list[str]],
        history_url: str,
        rooms: list[str],
        http: httpx.AsyncClient,
        start: int = 0,
    ) -> None:
        self.user = user
        self.gateways = gateways  # current gateway base URLs (http://...)
        self.history_url = history_url
        self.rooms = list(rooms)
        self.http = http
        self.gw = start
        self.ws: ClientConnection | None = None
        self.connected = asyncio.Event()
        self.synced = asyncio.Event()
        self.epoch = 0  # +1 at every break of the live stream (close or resync)
        self.conns = 0
        self.messages: dict[str, dict[str, Any]] = {}  # the merged view, every room
        self.cursor: dict[str, str | None] = {r: None for r in rooms}
        self.live = 0
        self.live_dups = 0  # the same message twice on one connection
        self.fetched = 0
        self.events: list[tuple[float, str]] = []
        self.presence: list[tuple[float, str, bool]] = []
        self.stray: list[dict[str, Any]] = []  # unexpected frames (errors without cmid...)
        self.pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.history_errors: list[int] = []
        # (time, room, after, last ids, count) of every page fetched after a cursor
        self.catch_ups: list[tuple[float, str, str | None, list[str] | None, int]] = []
        self.current_gateway = ""
        self._seen_here: set[str] = set()
        self._catching: dict[str, asyncio.Task[None]] = {}
        self._again: set[str] = set()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._reconnect = True
        self.ready_timeout = 10.0
        self.early_frames = 0  # frames received before ready (a protocol violation)
        self.record_latency = False
        self.latencies_ms: list[int] = []

    # lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                await self.ws.close()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(self._task, 5)
        for t in list(self._catching.values()):
            t.cancel()

    def hold(self) -> None:
        """Do not reconnect after the next break (a user who stays away)."""
        self._reconnect = False

    def release(self) -> None:
        self._reconnect = True

    @property
    def away(self) -> bool:
        """Held away and not connected: its sends will never be answered."""
        return not self._reconnect and not self.connected.is_set()

    def event_times(self, kind: str, after: float = 0.0) -> list[float]:
        return [t for t, k in self.events if k == kind and t >= after]

    def _ws_url(self, base: str) -> str:
        return base.replace("http://", "ws://") + "/ws"

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            if not self._reconnect:
                await asyncio.sleep(0.1)
                continue
            urls = self.gateways()
            base = urls[self.gw % len(urls)]
            try:
                ws = await websockets.connect(
                    self._ws_url(base),
                    origin=TEST_ORIGIN,  # type: ignore[arg-type]
                    open_timeout=5,
                    max_size=2**22,
                    close_timeout=2,
                    proxy=None,  # no proxy lookup in the environment on every connect
                )
                await ws.send(
                    orjson.dumps({"type": "auth", "token": self.user.access_token}).decode()
                )
                early = await self._await_ready(ws)
            except Exception as exc:  # refused, closed (4001, 1012...), timed out
                self.events.append(
                    (time.monotonic(), f"connect_failed:{type(exc).__name__}:{exc}"[:300])
                )
                failures += 1
                self.gw += 1
                await asyncio.sleep(min(1.0, 0.05 * 2**failures) * (0.5 + random.random()))
                continue
            failures = 0
            self.ws, self.current_gateway = ws, base
            self.conns += 1
            self._seen_here = set()
            self.synced.clear()
            self.events.append((time.monotonic(), "ready"))
            self.connected.set()
            code: int | None = None
            try:
                for f in early:
                    self._on_frame(f)
                async for raw in ws:
                    self._on_frame(orjson.loads(raw))
            except websockets.ConnectionClosed:
                pass
            finally:
                code = ws.close_code
                self.connected.clear()
                self.synced.clear()
                self.epoch += 1
                self.ws = None
                self.events.append((time.monotonic(), f"closed:{code}"))
                for fut in self.pending.values():
                    if not fut.done():
                        fut.set_exception(NotConnected(f"closed {code}"))
                self.pending.clear()
            if self._stopping:
                return
            self.gw += 1  # the load balancer sends us elsewhere
            await asyncio.sleep(0.05 + random.random() * 0.2)

    async def _await_ready(self, ws: ClientConnection) -> list[dict[str, Any]]:
        """Frames until ``ready`` (API.md: ready is the answer to auth; anything before it is
        counted in ``early_frames`` and handled after it)."""
        early: list[dict[str, Any]] = []
        deadline = time.monotonic() + self.ready_timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                with contextlib.suppress(Exception):
                    await ws.close()
                raise TimeoutError(f"no ready within {self.ready_timeout}s")
            try:
                f = orjson.loads(await asyncio.wait_for(ws.recv(), left))
            except TimeoutError:
                continue
            if f.get("type") == "ready":
                self.early_frames += len(early)
                return early
            early.append(f)

    # frames --------------------------------------------------------------------------------
    def _on_frame(self, f: dict[str, Any]) -> None:
        kind = f.get("type")
        cmid = f.get("client_msg_id")
        if kind in ("ack", "error") and isinstance(cmid, str) and cmid in self.pending:
            fut = self.pending.pop(cmid)
            if not fut.done():
                fut.set_result(f)
            if kind == "ack":
                self.messages.setdefault(f["message"]["id"], f["message"])
            return
        if kind == "message":
            m = f["message"]
            self.live += 1
            if self.record_latency:
                self.latencies_ms.append(now_ms() - _ms(m["sent_at"]))
            if m["id"] in self._seen_here:
                self.live_dups += 1
            self._seen_here.add(m["id"])
            self.messages.setdefault(m["id"], m)
        elif kind == "resync":
            self.synced.clear()
            self.epoch += 1
            self.events.append((time.monotonic(), "resync"))
        elif kind == "synced":
            self.synced.set()
            self.events.append((time.monotonic(), "synced"))
            for room in self.rooms:
                self.catch_up(room)
        elif kind == "presence":  # one change, or several in one frame (API.md v1.1)
            for ch in f.get("changes") or [f]:
                self.presence.append((time.monotonic(), ch["username"], bool(ch["online"])))
        elif kind in ("ack", "error"):
            pass  # a late answer to an attempt we stopped waiting for
        elif kind in ("typing", "room", "pong"):
            pass
        else:
            self.stray.append(f)

    # sending -------------------------------------------------------------------------------
    async def send(
        self,
        room: str | None,
        body: str,
        cmid: str,
        *,
        to: str | None = None,
        retry: bool = False,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        ws = self.ws
        if ws is None or not self.connected.is_set():
            raise NotConnected("not connected")
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[cmid] = fut
        frame: dict[str, Any] = {"type": "send", "body": body, "client_msg_id": cmid}
        if to is not None:
            frame["to"] = to
        else:
            frame["room"] = room
        if retry:
            frame["retry"] = True
        try:
            await ws.send(orjson.dumps(frame).decode())
        except websockets.ConnectionClosed as exc:
            self.pending.pop(cmid, None)
            raise NotConnected(str(exc)) from None
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.pending.pop(cmid, None)

    # the resume rule -----------------------------------------------------------------------
    def catching(self) -> bool:
        """A catch-up is running or asked for."""
        return bool(self._catching) or bool(self._again)

    def catch_up(self, room: str) -> None:
        """One catch-up per room at a time; asked again meanwhile, it runs once more after."""
        if room in self._catching:
            self._again.add(room)
            return
        task = asyncio.get_running_loop().create_task(self._catch_up(room))
        self._catching[room] = task

        def done(_: asyncio.Task[None]) -> None:
            self._catching.pop(room, None)
            if room in self._again and not self._stopping:
                self._again.discard(room)
                self.catch_up(room)

        task.add_done_callback(done)

    async def _page(self, room: str, params: dict[str, Any]) -> dict[str, Any] | None:
        for attempt in range(20):
            try:
                async with http_slots(self.http):
                    r = await self.http.get(
                        f"{self.history_url}/api/history/{room}",
                        params=params,
                        headers=self.user.headers,
                        timeout=10,
                    )
            except httpx.HTTPError:
                r = None
            if r is not None and r.status_code == 200:
                return dict(r.json())
            self.history_errors.append(r.status_code if r is not None else 0)
            await asyncio.sleep(min(2.0, 0.1 * 2**attempt))
        return None

    async def _catch_up(self, room: str) -> None:
        epoch, trusted = self.epoch, self.synced.is_set()
        cursor = self.cursor[room]
        newest: str | None = None
        if cursor is None:  # never synced this room: walk back from the newest page
            before: str | None = None
            while True:
                page = await self._page(
                    room, {"limit": 200, **({"before": before} if before else {})}
                )
                if page is None:
                    self.events.append((time.monotonic(), f"catch_up_gave_up:{room}"))
                    return
                msgs = page["messages"]
                self._merge(msgs)
                if msgs and newest is None:
                    newest = msgs[-1]["id"]
                if not page["has_more"] or not msgs:
                    break
                before = msgs[0]["id"]
            if newest is not None and trusted and self.synced.is_set() and self.epoch == epoch:
                self.cursor[room] = newest
            return
        after = cursor
        while True:
            page = await self._page(room, {"after": after, "limit": 200})
            self.catch_ups.append(
                (
                    time.monotonic(),
                    room,
                    after,
                    [m["id"] for m in page["messages"]][-3:] if page else None,
                    len(page["messages"]) if page else -1,
                )
            )
            if page is None:
                self.events.append((time.monotonic(), f"catch_up_gave_up:{room}"))
                return
            msgs = page["messages"]
            self._merge(msgs)
            if msgs and trusted and self.synced.is_set() and self.epoch == epoch:
                self.cursor[room] = msgs[-1]["id"]
            if not page["has_more"] or not msgs:
                return
            after = msgs[-1]["id"]

    def _merge(self, msgs: list[dict[str, Any]]) -> None:
        for m in msgs:
            if m["id"] not in self.messages:
                self.messages[m["id"]] = m
                self.fetched += 1

    def view(self, room: str) -> set[str]:
        return {i for i, m in self.messages.items() if m["room"] == room}
