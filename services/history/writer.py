"""A history writer: one shard's queue (``chat.history.<k>``) into the ``messages`` table.

One loop, one batch at a time, in delivery order:

1. collect deliveries until the batch is full (``history_batch_size``), its deadline passes
   (``history_batch_ms`` after its first delivery) or a sync marker arrives;
2. decode them; what can never be written (not JSON, missing or invalid fields) is dead-lettered;
3. write every message row in ONE transaction (one idempotent multi-row INSERT, then the rooms'
   ``last_activity_ms``) in a worker thread. A database fault (connection lost, timeout,
   deadlock...) keeps the whole batch unacked: back off (exponential, capped) and retry the same
   batch until it commits; nothing is dropped and nothing is requeued in a loop. A data error
   (a row the database rejects) switches the batch to row-by-row to find the culprit, which is
   dead-lettered (``nack(requeue=False)``) while the others are written;
4. only after the commit: ack every delivery, and answer every marker with
   ``events.synced(gw, marker)``: every message delivered before it is committed by then.

The queue is quorum with ``x-single-active-consumer``: one writer at a time consumes a shard
(``shards.py`` shares the shards among writer processes), so per-room order and the markers stay
exact. ``x-delivery-limit``
dead-letters a message that keeps coming back (e.g. one that crashes the process). Deliveries that
have already come back twice or more are written row by row, so such a message cannot take a
whole batch down with it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from services.common import events, topology
from services.common.bus import Bus, Delivery, PublishError
from services.common.settings import Settings
from services.history import metrics, store
from services.history.wire import Invalid, Item, Marker, Row, decode, is_marker_key

log = logging.getLogger("chat.history.writer")

SUSPECT_DELIVERY_COUNT = 2  # came back this many times: write it alone


@dataclass
class _Entry:
    delivery: Delivery
    item: Item
    rejected: str | None = None


class HistoryWriter:
    def __init__(
        self,
        settings: Settings,
        bus: Bus,
        engine: Engine,
        *,
        queue: str = topology.history_queue(0),
        backlog_interval: float = 5.0,
        max_backoff: float = 5.0,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.queue = queue
        self.batch_size = max(1, settings.history_batch_size)
        self.batch_seconds = max(0, settings.history_batch_ms) / 1000
        self.backlog_interval = backlog_interval
        self.max_backoff = max_backoff
        self._inbox: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._tasks: list[asyncio.Task[None]] = []
        self._accepting = False
        self._stopping = False
        self.batches = 0  # committed batches (for tests and logs)
        self.failing_since: float | None = None  # loop time of the first failed try, if failing

    # lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks:
            return
        self._accepting, self._stopping = True, False
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._run(), name="history-writer"),
            loop.create_task(self._watch_backlog(), name="history-backlog"),
        ]
        await self.bus.consume(self.queue, self._on_delivery, prefetch=self.batch_size * 2)
        log.info("history writer consuming %s", self.queue)

    async def stop(self, grace: float | None = None) -> None:
        """Stop taking deliveries, finish what was already received (within ``grace``), stop.

        Deliveries left unacked are returned to the queue when the bus closes."""
        if not self._tasks:
            return
        self._accepting, self._stopping = False, True
        self._inbox.put_nowait(None)  # wake the collector
        grace = self.settings.shutdown_grace if grace is None else grace
        run = self._tasks[0]
        with contextlib.suppress(TimeoutError, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(run), grace)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []

    async def _on_delivery(self, delivery: Delivery) -> None:
        # no await before the put: the bus's delivery order is the inbox's order
        if not self._accepting:
            return  # stopping: leave it unacked, the broker gives it to the next writer
        if delivery.redelivered or delivery.delivery_count:
            metrics.REDELIVERED.inc()
        self._inbox.put_nowait(delivery)

    # the loop ------------------------------------------------------------------------------
    async def _run(self) -> None:
        while not (self._stopping and self._inbox.empty()):
            batch = await self._collect()
            if not batch:
                continue
            try:
                await self._process(batch)
            except Exception:  # a bug: say so loudly; the batch stays unacked (redelivered later)
                log.exception(
                    "history batch failed unexpectedly; %d deliveries left unacked", len(batch)
                )
                await asyncio.sleep(1)

    async def _collect(self) -> list[Delivery]:
        """The next batch, in delivery order: closes on size, deadline or a marker."""
        first = await self._inbox.get()
        if first is None:
            return self._drain_nowait()
        batch = [first]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_seconds
        while len(batch) < self.batch_size and not _is_marker(batch[-1]):
            try:
                item = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._inbox.get(), remaining)
                except TimeoutError:
                    break
            if item is None:  # stop requested: finish with what is already here
                batch.extend(self._drain_nowait())
                break
            batch.append(item)
        return batch

    def _drain_nowait(self) -> list[Delivery]:
        out: list[Delivery] = []
        while len(out) < self.batch_size:
            try:
                item = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not None:
                out.append(item)
        return out

    async def _process(self, batch: list[Delivery]) -> None:
        entries = [_Entry(d, decode(d.body, d.routing_key)) for d in batch]
        row_entries = [e for e in entries if isinstance(e.item, Row)]
        if row_entries:
            suspect = any(e.delivery.delivery_count >= SUSPECT_DELIVERY_COUNT for e in row_entries)
            await self._commit(row_entries, one_by_one=suspect)
        metrics.BATCH_SIZE.observe(len(batch))
        self.batches += 1
        last_ok: Delivery | None = None
        for entry in entries:  # settle in delivery order, only now that the batch is committed
            if isinstance(entry.item, Invalid):
                await self._dead_letter(entry.delivery, entry.item.reason, entry.item.detail)
            elif entry.rejected is not None:
                await self._dead_letter(entry.delivery, "rejected", entry.rejected)
            elif isinstance(entry.item, Marker):
                await self._answer(entry.delivery, entry.item)
            else:
                last_ok = entry.delivery
        if last_ok is not None:
            # one frame acks the whole batch: every earlier delivery is settled by now (the
            # poison ones were nacked above) and later ones have higher delivery tags
            await last_ok.ack(multiple=True)

    async def _commit(self, entries: list[_Entry], *, one_by_one: bool) -> None:
        rows = [e.item for e in entries if isinstance(e.item, Row)]
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if one_by_one:
                    written, rejected = await asyncio.to_thread(store.write_each, self.engine, rows)
                else:
                    written = await asyncio.to_thread(store.write_batch, self.engine, rows)
                    rejected = []
                break
            except Exception as exc:
                if store.is_data_error(exc) and not one_by_one:
                    log.warning(
                        "a row was rejected; writing this batch row by row: %s", _first(exc)
                    )
                    one_by_one = True
                    continue
                attempt += 1
                metrics.DB_RETRIES.inc()
                if self.failing_since is None:
                    self.failing_since = loop.time()
                delay = self._backoff(attempt)
                log.warning(
                    "database write failed (try %d, %d rows kept unacked); retrying in %.2fs: %s",
                    attempt,
                    len(rows),
                    delay,
                    _first(exc),
                )
                await asyncio.sleep(delay)
        if self.failing_since is not None:
            log.info("database writes recovered after %d retries", attempt)
            self.failing_since = None
        by_row = {r.row: r.error for r in rejected}
        for entry in entries:
            if isinstance(entry.item, Row):
                entry.rejected = by_row.get(entry.item)
        self._record(written)

    def _record(self, written: store.Written) -> None:
        metrics.WRITTEN.inc(len(written.new))
        if written.duplicates:
            metrics.DUPLICATES.inc(written.duplicates)
        for row in written.new:
            metrics.WRITE_LAG.observe(max(0, written.committed_ms - row.sent_ms) / 1000)

    def _backoff(self, attempt: int) -> float:
        base = min(self.max_backoff, 0.05 * 2.0**attempt)
        return base * (0.5 + random.random() / 2)

    # settling ------------------------------------------------------------------------------
    async def _dead_letter(self, delivery: Delivery, reason: str, detail: str) -> None:
        log.error(
            "dead-lettering a history delivery (%s): %s; routing key %r, %d bytes",
            reason,
            detail,
            delivery.routing_key,
            len(delivery.body),
        )
        metrics.DEAD_LETTERS.labels(reason).inc()
        await delivery.nack(requeue=False)

    async def _answer(self, delivery: Delivery, marker: Marker) -> None:
        """Everything delivered before the marker is committed: tell its gateway."""
        for attempt in range(3):
            try:
                await self.bus.publish(*events.synced(marker.gw, marker.marker, marker.shard))
            except PublishError as exc:
                log.warning("could not answer marker %s (try %d): %s", marker.marker, attempt, exc)
                await asyncio.sleep(0.1 * 2**attempt)
                continue
            metrics.MARKERS.inc()
            await delivery.ack()
            return
        await delivery.nack(requeue=True)  # answered later, still after what precedes it

    async def _watch_backlog(self) -> None:
        while True:
            try:
                metrics.BACKLOG.labels(self.queue).set(await self.bus.queue_depth(self.queue))
            except Exception as exc:
                log.debug("backlog unavailable: %s", exc)
            await asyncio.sleep(self.backlog_interval)


def _first(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy appends the SQL and the rows' values: no bodies
    in the logs)."""
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__


def _is_marker(delivery: Delivery) -> bool:
    return is_marker_key(delivery.routing_key)
