"""Sync markers: how a gateway learns that the history writer has committed everything routed
before a moment (docs/PROTOCOL.md, "the resume rule").

A marker is a message on the history queue's routing key; the writer answers it (``synced`` on
the gateway's key) once everything delivered before it is committed. ``publish(conn)`` sends
the client ``synced`` when that answer comes; ``caught_up()`` waits for one (a retried send
looks the message up in history only after the writer has passed it).
"""

from __future__ import annotations

import asyncio
import logging

import orjson

from services.common import topology
from services.common.bus import Bus, PublishError
from services.common.ids import new_id
from services.gateway.connection import Connection

log = logging.getLogger("chat.gateway.sync")

SYNC_KEY = "room._sync.msg"


class SyncMarkers:
    def __init__(self, bus: Bus, gateway_id: str) -> None:
        self.bus = bus
        self.gw = gateway_id
        self.pending: dict[str, Connection] = {}  # marker -> the connection to tell
        self.waiters: dict[str, asyncio.Future[None]] = {}
        self._prune_at = 1024

    async def _publish(self, marker: str) -> None:
        body = orjson.dumps({"type": "marker", "marker": marker, "gw": self.gw})
        await self.bus.publish(topology.MESSAGES, SYNC_KEY, body, mandatory=True, persistent=True)

    async def publish(self, conn: Connection) -> None:
        """Tell ``conn`` ``synced`` once everything routed before now is in history."""
        marker = new_id()
        self.pending[marker] = conn
        if len(self.pending) > self._prune_at:  # unanswered markers of closed connections
            self.pending = {m: c for m, c in self.pending.items() if not c.closed}
            self._prune_at = max(1024, 2 * len(self.pending))
        try:
            await self._publish(marker)
        except PublishError:
            self.pending.pop(marker, None)
            log.warning("sync marker not published (broker unavailable)")

    async def caught_up(self, timeout: float) -> bool:
        """True once the history writer has committed everything routed before this call."""
        marker = new_id()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[marker] = future
        try:
            await self._publish(marker)
            await asyncio.wait_for(future, timeout)
            return True
        except (PublishError, TimeoutError):
            return False
        finally:
            self.waiters.pop(marker, None)

    def answered(self, marker: str) -> None:
        conn = self.pending.pop(marker, None)
        if conn is not None and not conn.closed:
            conn.send({"type": "synced"})
        waiter = self.waiters.get(marker)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
