"""Who is online, across every gateway.

Each gateway announces on the ``chat.presence`` fanout exchange the changes of its local set:
``up`` when a user's first local connection opens, ``down`` when the last one closes, each with
the gateway's change counter ``seq``. Every ``heartbeat`` seconds it sends ``beat`` with its
``seq`` and the size of its set: a few bytes whatever its size (gateways exchange changes, not
whole sets). A gateway that sees a ``seq`` it cannot account for (it missed a change: a broker
hiccup, its own restart) asks for that gateway's whole ``state`` (``want``), which is the only
message carrying a whole set, besides ``hello`` (a new or reconnected gateway: the others
answer with their ``state``). A gateway shutting down says ``bye``; one not heard from within
``timeout`` seconds is dropped, so a killed gateway's users go offline within that bound.

A user is online while any gateway (this one included) lists them. ``on_change(username, online)``
fires on every transition of that global state.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from services.common import topology
from services.common.bus import Bus, Delivery, PublishError

log = logging.getLogger("chat.presence")

ChangeCallback = Callable[[str, bool], Awaitable[None]]
WANT_EVERY = 1.0  # at most one state request per gateway per second


@dataclass
class _Remote:
    users: set[str] = field(default_factory=set)
    heard: float = 0.0  # monotonic time of the last message
    seq: int = -1  # the change counter its set is at; -1: not known yet
    wanted: float = 0.0  # when its state was last asked for


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
        self.seq = 0  # changes of the local set announced so far
        self.remote: dict[str, _Remote] = {}
        self.count: dict[str, int] = {}  # username -> gateways listing them (incl. this one)
        self.states_asked = 0  # how many times another gateway's whole state was asked for
        self._task: asyncio.Task[None] | None = None

    # queries -------------------------------------------------------------------------------
    def is_online(self, username: str) -> bool:
        return self.count.get(username, 0) > 0

    def online_users(self) -> list[str]:
        return sorted(u for u, n in self.count.items() if n > 0)

    def gateways_of(self, username: str) -> list[str]:
        """The other gateways that list ``username`` (where else they have connections)."""
        return [gw for gw, r in self.remote.items() if username in r.users]

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        await self._announce({"kind": "hello", "seq": self.seq, "users": sorted(self.local)})
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
        await self._announce({"kind": "hello", "seq": self.seq, "users": sorted(self.local)})

    async def _beat(self) -> None:
        tick = min(1.0, self.heartbeat, self.timeout / 4)
        last = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            try:
                if time.monotonic() - last >= self.heartbeat:
                    last = time.monotonic()
                    try:
                        await self._announce(
                            {"kind": "beat", "seq": self.seq, "size": len(self.local)}
                        )
                    except PublishError:
                        log.warning("presence heartbeat not published (broker unavailable)")
                await self.expire()
            except Exception:  # nothing may end the heartbeat and the expiry of dead gateways
                log.exception("presence tick failed")

    async def _announce(self, payload: dict[str, Any]) -> None:
        payload["gw"] = self.gateway_id
        await self.bus.publish(topology.PRESENCE, "", orjson.dumps(payload), timeout=3.0)

    async def _safe_announce(self, payload: dict[str, Any]) -> None:
        try:
            await self._announce(payload)
        except PublishError:  # the others see the gap in ``seq`` and ask for the state
            log.warning("presence change not published; the next heartbeat shows the gap")

    # local connections ---------------------------------------------------------------------
    async def connected(self, username: str) -> None:
        n = self.local.get(username, 0)
        self.local[username] = n + 1
        if n == 0:
            self.seq += 1
            await self._inc(username)
            await self._safe_announce({"kind": "up", "seq": self.seq, "user": username})

    async def disconnected(self, username: str) -> None:
        n = self.local.get(username, 0)
        if n <= 1:
            self.local.pop(username, None)
            if n == 1:
                self.seq += 1
                await self._dec(username)
                await self._safe_announce({"kind": "down", "seq": self.seq, "user": username})
        else:
            self.local[username] = n - 1

    # remote gateways -----------------------------------------------------------------------
    async def handle(self, delivery: Delivery) -> None:
        try:
            event = orjson.loads(delivery.body)
            gw = str(event["gw"])
            kind = str(event["kind"])
            seq = int(event.get("seq", -1))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed presence event")
            return
        if gw == self.gateway_id:
            return
        if kind == "want":
            if event.get("of") == self.gateway_id:
                await self._safe_announce(
                    {"kind": "state", "seq": self.seq, "users": sorted(self.local)}
                )
            return
        now = time.monotonic()
        r = self.remote.get(gw)
        if r is None:
            r = self.remote[gw] = _Remote(heard=now)
        r.heard = now
        if kind in ("state", "hello"):
            await self._replace(r, {str(u) for u in event.get("users", [])})
            r.seq = seq
            if kind == "hello":  # a new gateway: tell it what we know at once
                await self._safe_announce(
                    {"kind": "state", "seq": self.seq, "users": sorted(self.local)}
                )
        elif kind in ("up", "down"):
            user = str(event.get("user"))
            if kind == "up" and user not in r.users:
                await self._replace(r, r.users | {user})
            elif kind == "down" and user in r.users:
                await self._replace(r, r.users - {user})
            if r.seq >= 0 and seq == r.seq + 1:
                r.seq = seq
            else:  # a change we cannot place: what else did we miss? ask for the whole set
                await self._want(gw, r, now)
        elif kind == "beat":
            if seq != r.seq or int(event.get("size", len(r.users))) != len(r.users):
                await self._want(gw, r, now)
        elif kind == "bye":
            await self._replace(r, set())
            self.remote.pop(gw, None)

    async def _want(self, gw: str, r: _Remote, now: float) -> None:
        if now - r.wanted < WANT_EVERY:
            return
        r.wanted = now
        self.states_asked += 1
        await self._safe_announce({"kind": "want", "of": gw})

    async def _replace(self, r: _Remote, users: set[str]) -> None:
        old, r.users = r.users, users
        for u in users - old:
            await self._inc(u)
        for u in old - users:
            await self._dec(u)

    async def expire(self) -> None:
        now = time.monotonic()
        for gw, r in list(self.remote.items()):
            if now - r.heard > self.timeout:
                log.info("gateway %s silent for %.1fs: its users go offline", gw, now - r.heard)
                await self._replace(r, set())
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
