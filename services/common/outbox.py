"""Transactional outbox: events are written in the same transaction as the change that caused
them and relayed to the broker afterwards, so a broker outage loses no event.

The relay publishes rows in id order with publisher confirms and deletes them once confirmed.
Relays of several workers serialize on ``SELECT ... FOR UPDATE`` (a no-op on SQLite, where only
one process writes), so events reach the broker in commit order. Events are idempotent state
changes, so a row published twice (a relay that died between confirm and delete) is harmless.

History entries (the notices of a room's changes, ``events.notice_staged``) are staged with the
key ``room.<id>.msg``: the relay appends the room's shard in the history configuration of the
moment (``services.common.config``) and publishes them mandatory and persistent, like a
gateway's messages: the broker confirms them once the shard's quorum queue holds them (the
in-process bus: once the history writer committed them), and an unroutable one (no history
queue declared yet) stays in the outbox. While ``python -m services reshard`` has history
paused, the relay stops at the first such entry (what follows waits behind it, in order).
A notice relayed twice is stored once (its id comes from the room's version).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common import config as cluster_config
from services.common import topology
from services.common.bus import Bus, PublishError
from services.common.ids import now_ms
from services.common.models import Outbox

log = logging.getLogger("chat.outbox")


def add_events(session: Session, events: Iterable[tuple[str, str, bytes]]) -> None:
    """Stage events in the caller's transaction; they are relayed after it commits (in the
    order given: one multi-row INSERT, ids ascending)."""
    ms = now_ms()
    rows = [
        {"exchange": exchange, "routing_key": key, "body": body.decode(), "created_ms": ms}
        for exchange, key, body in events
    ]
    for k in range(0, len(rows), 1000):
        session.execute(insert(Outbox), rows[k : k + 1000])


class OutboxRelay:
    def __init__(
        self, engine: Engine, bus: Bus, poll_interval: float = 1.0, default_shards: int = 1
    ) -> None:
        self.engine = engine
        self.bus = bus
        self.poll_interval = poll_interval
        self.default_shards = default_shards  # a new database's history shards (config.load)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._drained = threading.Condition()
        self._started = 0  # passes started
        self._finished = 0  # passes finished
        self.relayed = 0

    def kick(self) -> None:
        """Wake the relay now (thread-safe)."""
        if self._loop is not None and self._wake is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    def kick_and_wait(self, timeout: float = 2.0) -> bool:
        """Wake the relay and wait (from another thread) until it has drained once."""
        with self._drained:
            target = self._started + 1  # the first pass that starts after this call
            self.kick()
            return self._drained.wait_for(lambda: self._finished >= target, timeout)

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        while True:
            self._wake.clear()
            with self._drained:
                self._started += 1
                number = self._started
            try:
                await self.drain()
            except Exception:  # the broker or the database is away: keep the rows, retry
                log.warning("outbox relay pass failed; will retry", exc_info=True)
            with self._drained:
                self._finished = number
                self._drained.notify_all()
            try:
                async with asyncio.timeout(self.poll_interval):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def drain(self) -> int:
        total = 0
        while True:
            sent = await self._pass()
            total += sent
            if sent == 0:
                return total

    async def _pass(self, limit: int = 1000) -> int:
        conn = await asyncio.to_thread(self.engine.connect)
        try:
            trans = await asyncio.to_thread(conn.begin)
            rows = await asyncio.to_thread(
                lambda: conn.execute(
                    select(Outbox.id, Outbox.exchange, Outbox.routing_key, Outbox.body)
                    .order_by(Outbox.id)
                    .limit(limit)
                    .with_for_update()
                ).all()
            )
            items = await self._resolve(rows)
            rows = rows[: len(items)]  # history paused: the rest waits (in order)
            # pipelined: a page of events goes out at once, in order (a group of 10,000 is 10,000
            # events: one confirm round each would take seconds)
            n = await self.bus.publish_many(items, durable=topology.is_history_entry_key)
            done = [row.id for row in rows[:n]]
            if n < len(rows):
                log.warning("broker refused an outbox event; %d relayed this pass", n)
            if done:
                await asyncio.to_thread(
                    lambda: conn.execute(delete(Outbox).where(Outbox.id.in_(done)))
                )
            await asyncio.to_thread(trans.commit)
            self.relayed += len(done)
            if len(done) < len(rows):
                raise PublishError("outbox relay interrupted")
            return len(done)
        finally:
            await asyncio.to_thread(conn.close)

    async def _resolve(self, rows: Sequence[Any]) -> list[tuple[str, str, bytes]]:
        """The rows as publishes: a history entry gets its room's shard of the moment; none
        from the first history entry on while history is paused (a reshard)."""
        items: list[tuple[str, str, bytes]] = []
        cfg: cluster_config.HistoryConfig | None = None
        for row in rows:
            key = row.routing_key
            room = topology.unsharded_room(key)
            if room is not None:
                if cfg is None:
                    cfg = await asyncio.to_thread(
                        cluster_config.load, self.engine, self.default_shards
                    )
                if cfg.paused:
                    break
                key = topology.room_msg_key(room, cfg.shards)
            items.append((row.exchange, key, row.body.encode()))
        return items
