"""Which history shards this writer process writes (issue 14: persistence grows by adding
writers).

The history queue is N shards (``chat.history.<k>``, services/common/topology.py); each has a
single active consumer, so one writer at a time commits a shard, in its order. Writer
processes share the shards:

- each announces itself every ``tick`` on the ``chat.writers`` fanout exchange; a writer not
  heard from within ``expiry`` is gone;
- each aims at its fair share, ceil(N / live writers): below it, it takes free shards; above
  it (a writer joined), it gives the extra ones back;
- a shard is taken by locking it (an exclusive queue of the writer's connection: one holder
  at most, and a killed writer's locks vanish with its connection) and then consuming it;
- giving a shard back: stop taking deliveries, finish the batch in hand (commit, ack), close
  the consumer (the broker puts what was not acked back, in order), then unlock. The next
  writer consumes it from where this one stopped; markers stay behind what precedes them.

A killed writer's shards are free at once; the others take them once it has been silent for
``expiry`` seconds (their fair share grows). ``python -m services reshard`` changes N at run time: the
announcement (``history_config``) makes every writer give back the shards that are gone.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
import zlib
from typing import Any

import orjson
from sqlalchemy.engine import Engine

from services.common import config as cluster_config
from services.common import topology
from services.common.bus import Bus, Delivery, PublishError
from services.common.config import HistoryConfig
from services.common.settings import Settings
from services.history import metrics
from services.history.writer import GroupCommit, HistoryWriter

log = logging.getLogger("chat.history.shards")


class ShardedWriters:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        engine: Engine,
        *,
        writer_id: str | None = None,
        tick: float = 0.5,
        expiry: float = 2.5,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.id = writer_id or settings.gateway_id
        self.tick = tick
        self.expiry = expiry
        self.config = HistoryConfig(settings.history_shards)
        self.lanes: dict[int, HistoryWriter] = {}
        self.group = GroupCommit(engine)  # the shards of this process commit together
        self.peers: dict[str, float] = {}  # other writers: id -> when last heard
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # one rebalance at a time
        self._stopping = False
        metrics.SHARDS_HELD.set_function(lambda: len(self.lanes))

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        self.config = await asyncio.to_thread(
            cluster_config.load, self.engine, self.settings.history_shards
        )
        await self.bus.declare_history(self.config.shards)
        queue = f"writers.{self.id}"
        await self.bus.private_queue(queue, self._on_delivery)
        await self.bus.bind_many(
            queue, [(topology.WRITERS, ""), (topology.EVENTS, cluster_config.CONFIG_KEY)]
        )
        self.bus.on_reconnect(self._on_reconnect)
        await self._beat()
        await self.rebalance()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="writers")
        log.info(
            "history writer %s: shards %s of %d", self.id, sorted(self.lanes), self.config.shards
        )

    async def stop(self, grace: float | None = None) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        async with self._lock:
            await asyncio.gather(
                *(self._release(k, grace) for k in list(self.lanes)), return_exceptions=True
            )

    @property
    def writers(self) -> list[HistoryWriter]:
        return [self.lanes[k] for k in sorted(self.lanes)]

    # the loop ------------------------------------------------------------------------------
    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.tick)
            try:
                await self._beat()
                await self.rebalance()
            except Exception:  # nothing may stop the shards from being shared
                log.exception("history shards: rebalance failed")

    async def _beat(self) -> None:
        body = orjson.dumps({"type": "writer", "id": self.id, "shards": sorted(self.lanes)})
        with contextlib.suppress(PublishError):
            await self.bus.publish(topology.WRITERS, "", body)

    def live_writers(self) -> int:
        now = time.monotonic()
        for wid, seen in list(self.peers.items()):
            if now - seen > self.expiry:
                del self.peers[wid]
        return 1 + len(self.peers)

    def share(self) -> int:
        return math.ceil(self.config.shards / self.live_writers())

    async def rebalance(self) -> None:
        if self._stopping:
            return
        async with self._lock:
            n = self.config.shards
            for k in [k for k in self.lanes if k >= n]:  # gone with a reshard
                await self._release(k)
            share = self.share()
            while len(self.lanes) > share:  # a writer joined: give the newest ones back
                await self._release(max(self.lanes))
            if len(self.lanes) >= share or not self.bus.connected:
                return
            start = zlib.crc32(self.id.encode()) % n  # writers try the shards in other orders
            for i in range(n):
                k = (start + i) % n
                if k in self.lanes:
                    continue
                if await self.bus.try_lock(topology.history_lock(k)):
                    await self._take(k)
                    if len(self.lanes) >= share:
                        return

    async def _take(self, k: int) -> None:
        lane = HistoryWriter(
            self.settings,
            self.bus,
            self.engine,
            queue=topology.history_queue(k),
            write=self.group.write,
        )
        try:
            await lane.start()
        except Exception:
            await self.bus.unlock(topology.history_lock(k))
            raise
        self.lanes[k] = lane
        log.info("history writer %s took shard %d", self.id, k)

    async def _release(self, k: int, grace: float | None = None) -> None:
        lane = self.lanes.pop(k)
        await lane.stop(grace)  # the batch in hand is committed and acked first
        await self.bus.cancel(topology.history_queue(k))  # the rest goes back, in order
        await self.bus.unlock(topology.history_lock(k))
        log.info("history writer %s gave shard %d back", self.id, k)

    async def _on_reconnect(self) -> None:
        """A new connection holds no lock: take ours again, or give the shard up."""
        async with self._lock:
            for k in list(self.lanes):
                try:
                    mine = await self.bus.try_lock(topology.history_lock(k))
                except PublishError:
                    mine = False
                if not mine:
                    lane = self.lanes.pop(k)
                    await lane.stop(0)
                    await self.bus.cancel(topology.history_queue(k))
                    log.info("history writer %s lost shard %d in a reconnect", self.id, k)

    # what others say -----------------------------------------------------------------------
    async def _on_delivery(self, d: Delivery) -> None:
        try:
            doc: Any = orjson.loads(d.body)
            kind = doc.get("type")
            if kind == "writer":
                if doc.get("id") != self.id:
                    self.peers[str(doc["id"])] = time.monotonic()
            elif kind == "history_config":
                cfg = HistoryConfig.parse(doc)
                if cfg.epoch >= self.config.epoch:
                    self.config = cfg
                    if not cfg.paused:
                        await self.bus.declare_history(cfg.shards)
                    asyncio.get_running_loop().create_task(self.rebalance())
        except (ValueError, KeyError, TypeError, AttributeError):
            log.warning("ignoring a malformed message on the writers' queue")
