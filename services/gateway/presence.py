"""Who is online, across every gateway.

Each gateway announces on the ``chat.presence`` fanout exchange when a user's first local
connection opens (``up``) and the last one closes (``down``), and heartbeats its whole local set
(``state``) every ``heartbeat`` seconds. A new gateway says ``hello`` and the others answer with
their state at once; a gateway shutting down says ``bye``. A gateway not heard from within
``timeout`` seconds is dropped, so a killed gateway's users go offline within that bound.

A user is online while any gateway (this one included) lists them. ``on_change(username, online)``
fires on every transition of that global state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from services.common import topology
from services.common.bus import Bus, Delivery, PublishError

log = logging.getLogger("chat.presence")

ChangeCallback = Callable[[str, bool], Awaitable[None]]


class Presence:
    def __init__(
        self,
        bus: Bus,
        gateway_id: str,
        on_change: ChangeCallback,
        heartbeat: float = 5.0,
        timeout: float = 15.0,
    ) -> None:
        self.bus = bus
        self.gateway_id = gateway_id
        self.on_change = on_change
        self.heartbeat = heartbeat
        self.timeout = timeout
        self.local: dict[str, int] = {}  # username -> open local connections
        self.remote: dict[str, tuple[set[str], float]] = {}  # gateway -> (users, last heard)
        self.count: dict[str, int] = {}  # username -> gateways listing them (incl. this one)
        self._task: asyncio.Task[None] | None = None

    # queries -------------------------------------------------------------------------------
    def is_online(self, username: str) -> bool:
        return self.count.get(username, 0) > 0

    def online_users(self) -> list[str]:
        return sorted(u for u, n in self.count.items() if n > 0)

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._announce({"kind": "hello", "users": sorted(self.local)})
        self._task = asyncio.get_running_loop().create_task(self._beat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        try:
            await self._announce({"kind": "bye"})
        except PublishError:
            pass

    async def resend_state(self) -> None:
        """After a broker reconnect: others may have expired us; say hello again."""
        await self._announce({"kind": "hello", "users": sorted(self.local)})

    async def _beat(self) -> None:
        tick = min(1.0, self.heartbeat, self.timeout / 4)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() - last >= self.heartbeat:
                    last = time.monotonic()
                    try:
                        await self._announce({"kind": "state", "users": sorted(self.local)})
                    except PublishError:
                        log.warning("presence heartbeat not published (broker unavailable)")
                await self.expire()
            except Exception:  # nothing may end the heartbeat and the expiry of dead gateways
                log.exception("presence tick failed")

    async def _announce(self, payload: dict[str, Any]) -> None:
        payload["gw"] = self.gateway_id
        await self.bus.publish(topology.PRESENCE, "", orjson.dumps(payload), timeout=3.0)

    # local connections ---------------------------------------------------------------------
    async def connected(self, username: str) -> None:
        n = self.local.get(username, 0)
        self.local[username] = n + 1
        if n == 0:
            await self._inc(username)
            await self._safe_announce({"kind": "up", "user": username})

    async def disconnected(self, username: str) -> None:
        n = self.local.get(username, 0)
        if n <= 1:
            self.local.pop(username, None)
            if n == 1:
                await self._dec(username)
                await self._safe_announce({"kind": "down", "user": username})
        else:
            self.local[username] = n - 1

    async def _safe_announce(self, payload: dict[str, Any]) -> None:
        try:
            await self._announce(payload)
        except PublishError:
            log.warning("presence change not published; the next heartbeat carries it")

    # remote gateways -----------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        try:
            event = orjson.loads(delivery.body)
            gw = str(event["gw"])
            kind = str(event["kind"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed presence event")
            return
        if gw == self.gateway_id:
            return
        now = time.monotonic()
        if kind in ("state", "hello"):
            users = {str(u) for u in event.get("users", [])}
            await self._replace(gw, users, now)
            if kind == "hello":  # a new gateway: tell it what we know at once
                await self._safe_announce({"kind": "state", "users": sorted(self.local)})
        elif kind == "up":
            users, _ = self.remote.get(gw, (set(), now))
            if str(event.get("user")) not in users:
                await self._replace(gw, users | {str(event.get("user"))}, now)
            else:
                self.remote[gw] = (users, now)
        elif kind == "down":
            users, _ = self.remote.get(gw, (set(), now))
            await self._replace(gw, users - {str(event.get("user"))}, now)
        elif kind == "bye":
            await self._replace(gw, set(), now)
            self.remote.pop(gw, None)

    async def _replace(self, gw: str, users: set[str], now: float) -> None:
        old, _ = self.remote.get(gw, (set(), now))
        self.remote[gw] = (users, now)
        for u in users - old:
            await self._inc(u)
        for u in old - users:
            await self._dec(u)

    async def expire(self) -> None:
        now = time.monotonic()
        for gw, (_users, seen) in list(self.remote.items()):
            if now - seen > self.timeout:
                log.info("gateway %s silent for %.1fs: its users go offline", gw, now - seen)
                await self._replace(gw, set(), now)
                self.remote.pop(gw, None)

    async def _inc(self, username: str) -> None:
        n = self.count.get(username, 0)
        self.count[username] = n + 1
        if n == 0:
            await self.on_change(username, True)

    async def _dec(self, username: str) -> None:
        n = self.count.get(username, 0)
        if n <= 1:
            self.count.pop(username, None)
            if n == 1:
                await self.on_change(username, False)
        else:
            self.count[username] = n - 1
