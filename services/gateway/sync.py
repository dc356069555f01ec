"""Sync markers: how a gateway learns that the history writers have committed everything routed
before a moment (docs/PROTOCOL.md, "the resume rule").

A marker is a message into each history shard (``room._sync.msg.<k>``); the shard's writer
answers (``synced`` on the gateway's key, naming the shard) once everything delivered to that
shard before the marker is committed. With an answer from every shard, everything routed
before the marker is in history: ``publish(conn)`` then sends the client ``synced``.
``caught_up(shards)`` waits for the answers of some shards (a retried send looks the message
up in history only after its room's shard has passed it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable

import orjson

from services.common import topology
from services.common.bus import Bus, PublishError
from services.common.ids import new_id
from services.gateway.connection import Connection

log = logging.getLogger("chat.gateway.sync")


def compact(body: bytes) -> bytes:
    """A right-sized copy: orjson's output keeps its 4 KiB buffer, and a marker waits for its
    confirm (seconds, in a reconnect storm) with one per shard per connection."""
    return bytes(memoryview(body))


class SyncMarkers:
    def __init__(self, bus: Bus, gateway_id: str, shards: Callable[[], int]) -> None:
        self.bus = bus
        self.gw = gateway_id
        self.shards = shards
        # marker -> (the connection to tell, the shards that have not answered yet)
        self.pending: dict[str, tuple[Connection, set[int]]] = {}
        self.waiters: dict[str, tuple[asyncio.Future[None], set[int]]] = {}
        self._prune_at = 1024

    async def _publish(self, marker: str, shards: Iterable[int]) -> None:
        for k in shards:
            body = compact(
                orjson.dumps({"type": "marker", "marker": marker, "gw": self.gw, "shard": k})
            )
            await self.bus.publish(
                topology.MESSAGES, topology.sync_key(k), body, mandatory=True, persistent=True
            )

    async def publish(self, conn: Connection) -> None:
        """Tell ``conn`` ``synced`` once everything routed before now is in history. Retried
        until the broker takes it (a shard's queue may be between leaders, the broker away):
        a client told to resync must get its ``synced`` (or lose its connection)."""
        delay = 0.1
        while not conn.closed:
            marker = new_id()
            shards = set(range(self.shards()))
            self.pending[marker] = (conn, set(shards))
            if len(self.pending) > self._prune_at:  # unanswered markers of closed connections
                self.pending = {m: v for m, v in self.pending.items() if not v[0].closed}
                self._prune_at = max(1024, 2 * len(self.pending))
            try:
                await self._publish(marker, sorted(shards))
                return
            except PublishError as exc:
                self.pending.pop(marker, None)
                log.warning("sync marker not published (%s); trying again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def caught_up(self, timeout: float, shards: Iterable[int] | None = None) -> bool:
        """True once the writers of ``shards`` (default: all) have committed everything routed
        to them before this call."""
        marker = new_id()
        wanted = set(range(self.shards())) if shards is None else set(shards)
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters[marker] = (future, set(wanted))
        try:
            await self._publish(marker, sorted(wanted))
            await asyncio.wait_for(future, timeout)
            return True
        except (PublishError, TimeoutError):
            return False
        finally:
            self.waiters.pop(marker, None)

    def answered(self, marker: str, shard: int) -> None:
        entry = self.pending.get(marker)
        if entry is not None:
            conn, left = entry
            left.discard(shard)
            if not left:
                del self.pending[marker]
                if not conn.closed:
                    conn.send({"type": "synced"})
        waiter = self.waiters.get(marker)
        if waiter is not None:
            future, left = waiter
            left.discard(shard)
            if not left and not future.done():
                future.set_result(None)
