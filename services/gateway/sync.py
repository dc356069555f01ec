"""Sync markers: how a gateway learns that the history writers have committed everything routed
before a moment (docs/PROTOCOL.md, "the resume rule").

A marker is a message into each history shard (``room._sync.msg.<k>``); the shard's writer
answers (``synced`` on the gateway's key, naming the shard) once everything delivered to that
shard before the marker is committed. With an answer from every shard, everything routed
before the marker is in history: ``publish(conn)`` then sends the client ``synced``.

Markers go out in rounds, like the history batches (publisher.py): the connections that ask
while no round is in flight share the next one, one marker per shard (its publishes to the
shards at once). A connection that asks while a round is being published waits for the next
round, whose marker is published after its call (after its rooms were bound: the resume rule).
A reconnect storm of thousands of connections costs a few rounds of N publishes, not N
confirmed publishes per connection (the confirms in flight of a 3,000-socket connect burst
were most of the gateway's memory per idle socket beyond the sockets themselves).
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
    confirm (seconds, in a reconnect storm)."""
    return bytes(memoryview(body))


class SyncMarkers:
    def __init__(self, bus: Bus, gateway_id: str, shards: Callable[[], int]) -> None:
        self.bus = bus
        self.gw = gateway_id
        self.shards = shards
        # marker -> (the connections to tell, the shards that have not answered yet)
        self.pending: dict[str, tuple[list[Connection], set[int]]] = {}
        self.waiters: dict[str, tuple[asyncio.Future[None], set[int]]] = {}
        self._prune_at = 1024
        self._next: list[tuple[Connection, asyncio.Future[None]]] = []  # for the next round
        self._busy = False  # a round is being published
        self.rounds = 0  # markers published (a figure for tests)
        self._shared: dict[int, asyncio.Future[bool]] = {}  # shard -> its next shared marker

    async def _publish(self, marker: str, shards: Iterable[int]) -> None:
        """The marker into each of ``shards`` at once; PublishError if any was not taken."""
        sends = []
        for k in shards:
            body = compact(
                orjson.dumps({"type": "marker", "marker": marker, "gw": self.gw, "shard": k})
            )
            sends.append(
                self.bus.publish(
                    topology.MESSAGES, topology.sync_key(k), body, mandatory=True, persistent=True
                )
            )
        for result in await asyncio.gather(*sends, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def publish(self, conn: Connection) -> None:
        """Tell ``conn`` ``synced`` once everything routed before now is in history. Returns
        once a marker published after this call was taken by the broker; retried until then (a
        shard's queue may be between leaders, the broker away): a client told to resync must
        get its ``synced`` (or lose its connection)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next.append((conn, future))
        if not self._busy:
            self._busy = True
            asyncio.get_running_loop().call_soon(self._start)  # what else asks in this turn
        await asyncio.shield(future)

    def _start(self) -> None:
        task = asyncio.get_running_loop().create_task(self._rounds())
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _rounds(self) -> None:
        try:
            while self._next:
                batch, self._next = self._next, []
                try:
                    await self._round([c for c, _ in batch])
                except Exception as exc:  # not a refusal (those are retried): each caller hears
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(exc)
                            f.exception()  # retrieved: each caller raises it through its await
                    continue
                for _, f in batch:
                    if not f.done():
                        f.set_result(None)
        finally:
            self._busy = False
            if self._next:  # asked while the last round was finishing
                self._busy = True
                asyncio.get_running_loop().call_soon(self._start)

    async def _round(self, conns: list[Connection]) -> None:
        delay = 0.1
        while True:
            conns = [c for c in conns if not c.closed]
            if not conns:
                return
            marker = new_id()
            shards = set(range(self.shards()))
            self.pending[marker] = (conns, set(shards))
            if len(self.pending) > self._prune_at:  # unanswered markers of closed connections
                self.pending = {
                    m: v for m, v in self.pending.items() if any(not c.closed for c in v[0])
                }
                self._prune_at = max(1024, 2 * len(self.pending))
            try:
                await self._publish(marker, sorted(shards))
                self.rounds += 1
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

    async def passed(self, shard: int, timeout: float) -> bool:
        """``caught_up`` for one shard, shared: the callers of one turn of the loop share one
        marker, published after all of them asked (a group created with thousands of members
        online here costs one marker, not one per member)."""
        fut = self._shared.get(shard)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._shared[shard] = fut
            asyncio.get_running_loop().call_soon(self._start_shared, shard, fut, timeout)
        return await asyncio.shield(fut)

    def _start_shared(self, shard: int, fut: asyncio.Future[bool], timeout: float) -> None:
        if self._shared.get(shard) is fut:
            del self._shared[shard]  # who asks from now on gets a marker of their own

        def done(task: asyncio.Task[bool]) -> None:
            ok = not task.cancelled() and task.exception() is None and task.result()
            if not fut.done():
                fut.set_result(bool(ok))

        task = asyncio.get_running_loop().create_task(self.caught_up(timeout, [shard]))
        task.add_done_callback(done)

    def answered(self, marker: str, shard: int) -> None:
        entry = self.pending.get(marker)
        if entry is not None:
            conns, left = entry
            left.discard(shard)
            if not left:
                del self.pending[marker]
                for conn in conns:
                    if not conn.closed:
                        conn.send({"type": "synced"})
        waiter = self.waiters.get(marker)
        if waiter is not None:
            future, left = waiter
            left.discard(shard)
            if not left and not future.done():
                future.set_result(None)
