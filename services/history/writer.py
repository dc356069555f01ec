"""A history writer: one shard's queue (``chat.history.<k>``) into the ``messages`` table.

One loop, one batch at a time, in delivery order:

1. collect deliveries until the batch holds ``history_batch_size`` entries, its deadline passes
   (``history_batch_ms`` after its first delivery) or a sync marker arrives. A delivery is one
   message, edit or delete, or a gateway's batch of them (``{"type":"batch"}``: what it
   accepted for this shard in one turn of its loop);
2. decode them; a delivery that can never be written (not JSON, missing or invalid fields) is
   dead-lettered; an entry of a batch that can never be written is dead-lettered alone
   (published to ``chat.dead``) and the rest of its batch is written;
3. write every entry in ONE transaction (one idempotent multi-row INSERT of the messages and
   their search documents, the edits and deletes in order, then the rooms'
   ``last_activity_ms``: store.py) in a worker thread; with several shards in one process, their
   batches ready at the same moment share that transaction (``GroupCommit``). A database fault
   (connection lost, timeout, deadlock...) keeps the whole batch unacked: back off
   (exponential, capped) and retry the same batch until it commits; nothing is dropped and
   nothing is requeued in a loop. A data error (a row the database rejects) switches the batch
   to row-by-row to find the culprit, which is dead-lettered while the others are written;
4. only after the commit: ack every delivery, and answer every marker with
   ``events.synced(gw, marker)``: every entry delivered before it is committed by then (in the
   all-in-one mode the in-process bus confirms a publish only on that ack, so an edit or a
   delete is on disk when the gateway answers it, like a message).

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
import dataclasses
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import orjson
from sqlalchemy.engine import Engine

from services.common import events, topology
from services.common.bus import Bus, Delivery, PublishError
from services.common.settings import Settings
from services.history import metrics, store
from services.history.wire import Batch, Change, Entry, Invalid, Marker, Row, decode

log = logging.getLogger("chat.history.writer")

SUSPECT_DELIVERY_COUNT = 2  # came back this many times: write it alone


@dataclass
class _Entry:
    delivery: Delivery
    rows: list[Entry]  # what it carries to write (one entry, or a gateway's batch), in order
    marker: Marker | None = None
    invalid: Invalid | None = None  # the delivery as a whole can never be written
    poison: list[tuple[str, str, bytes]] | None = None  # (reason, detail, bytes) of batch entries

    @classmethod
    def of(cls, delivery: Delivery) -> _Entry:
        item = decode(delivery.body, delivery.routing_key)
        if isinstance(item, Row | Change):
            return cls(delivery, [item])
        if isinstance(item, Batch):
            poison = [(i.reason, i.detail, raw) for i, raw in item.invalid]
            return cls(delivery, item.rows, poison=poison)
        if isinstance(item, Marker):
            return cls(delivery, [], marker=item)
        return cls(delivery, [], invalid=item)


Write = Callable[[list[Entry]], Awaitable[store.Written]]


class GroupCommit:
    """One transaction for the batches of several shards that are ready at the same moment
    (one writer process holding several shards commits once, not once per shard). A batch
    waits for no one: a commit starts as soon as one is asked for; batches asked for while
    it runs go together into the next. A failure is every waiter's (each retries or goes
    row by row, as alone)."""

    def __init__(self, engine: Engine, max_rows: int = 2000) -> None:
        self.engine = engine
        self.max_rows = max_rows
        self._waiting: list[tuple[list[Entry], asyncio.Future[store.Written]]] = []
        self._running = False

    async def write(self, rows: list[Entry]) -> store.Written:
        future: asyncio.Future[store.Written] = asyncio.get_running_loop().create_future()
        self._waiting.append((rows, future))
        if not self._running:
            self._running = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._waiting:
                take: list[tuple[list[Entry], asyncio.Future[store.Written]]] = []
                n = 0
                while self._waiting and (not take or n + len(self._waiting[0][0]) <= self.max_rows):
                    rows, fut = self._waiting.pop(0)
                    take.append((rows, fut))
                    n += len(rows)
                every = [r for rows, _ in take for r in rows]
                try:
                    written = await asyncio.to_thread(store.write_batch, self.engine, every)
                except Exception as exc:
                    for _, fut in take:
                        if not fut.done():
                            fut.set_exception(exc)
                            fut.exception()  # retrieved here; the waiter re-raises it
                    continue
                new = {r.id for r in written.new}
                pending_applied = written.pending_applied  # counted once, with the first
                for rows, fut in take:
                    messages = [r for r in rows if isinstance(r, Row)]
                    mine = [r for r in messages if r.id in new]
                    ids = {r.id for r in rows if isinstance(r, Change)}
                    changes = [(c, s) for c, s in written.changes if c.id in ids]
                    if not fut.done():
                        fut.set_result(
                            store.Written(
                                mine,
                                len(messages) - len(mine),
                                written.committed_ms,
                                changes,
                                pending_applied,
                            )
                        )
                    pending_applied = 0
        finally:
            self._running = False


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
        write: Write | None = None,
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.queue = queue
        self.batch_size = max(1, settings.history_batch_size)
        self.batch_seconds = max(0, settings.history_batch_ms) / 1000
        self.backlog_interval = backlog_interval
        self.max_backoff = max_backoff
        self.write: Write = write or self._write_alone
        self._inbox: asyncio.Queue[_Entry | None] = asyncio.Queue()
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
        self._inbox.put_nowait(_Entry.of(delivery))

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

    async def _collect(self) -> list[_Entry]:
        """The next batch, in delivery order: closes on size (rows), deadline or a marker."""
        first = await self._inbox.get()
        if first is None:
            return self._drain_nowait()
        batch = [first]
        rows = len(first.rows)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.batch_seconds
        while rows < self.batch_size and batch[-1].marker is None:
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
            rows += len(item.rows)
        return batch

    def _drain_nowait(self) -> list[_Entry]:
        out: list[_Entry] = []
        while len(out) < self.batch_size:
            try:
                item = self._inbox.get_nowait()
            except asyncio.QueueEmpty:
                break
            if item is not None:
                out.append(item)
        return out

    async def _process(self, batch: list[_Entry]) -> None:
        row_entries = [e for e in batch if e.rows]
        rejected: dict[Entry, str] = {}
        if row_entries:
            suspect = any(e.delivery.delivery_count >= SUSPECT_DELIVERY_COUNT for e in row_entries)
            rejected = await self._commit(row_entries, one_by_one=suspect)
        metrics.BATCH_SIZE.observe(sum(len(e.rows) for e in batch))
        self.batches += 1
        last_ok: Delivery | None = None
        for entry in batch:  # settle in delivery order, only now that the batch is committed
            if entry.invalid is not None:
                await self._dead_letter(entry.delivery, entry.invalid.reason, entry.invalid.detail)
                continue
            if entry.marker is not None:
                await self._answer(entry.delivery, entry.marker)
                continue
            bad = [(r, rejected[r]) for r in entry.rows if r in rejected]
            if len(entry.rows) == 1 and bad and entry.poison is None:  # a single message
                await self._dead_letter(entry.delivery, "rejected", bad[0][1])
                continue
            for reason, detail, raw in entry.poison or []:  # entries of a batch: alone
                await self._dead_letter_entry(entry.delivery, reason, detail, raw)
            for row, error in bad:
                await self._dead_letter_entry(entry.delivery, "rejected", error, _describe(row))
            last_ok = entry.delivery
        if last_ok is not None:
            # one frame acks the whole batch: every earlier delivery is settled by now (the
            # poison ones were nacked above) and later ones have higher delivery tags
            await last_ok.ack(multiple=True)

    async def _write_alone(self, rows: list[Entry]) -> store.Written:
        return await asyncio.to_thread(store.write_batch, self.engine, rows)

    async def _commit(self, entries: list[_Entry], *, one_by_one: bool) -> dict[Entry, str]:
        """Commit the entries' rows (retrying a database fault until it commits); the rows the
        database refused, with why."""
        rows = [r for e in entries for r in e.rows]
        attempt = 0
        loop = asyncio.get_running_loop()
        while True:
            try:
                if one_by_one:
                    written, refused = await asyncio.to_thread(store.write_each, self.engine, rows)
                else:
                    written = await self.write(rows)
                    refused = []
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
        self._record(written)
        return {r.row: r.error for r in refused}

    def _record(self, written: store.Written) -> None:
        metrics.WRITTEN.inc(len(written.new))
        if written.duplicates:
            metrics.DUPLICATES.inc(written.duplicates)
        for row in written.new:
            metrics.WRITE_LAG.observe(max(0, written.committed_ms - row.sent_ms) / 1000)
        for change, status in written.changes:
            metrics.CHANGES.labels(change.kind, status).inc()
        if written.pending_applied:
            metrics.PENDING_APPLIED.inc(written.pending_applied)

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

    async def _dead_letter_entry(
        self, delivery: Delivery, reason: str, detail: str, raw: bytes
    ) -> None:
        """One entry of a batch that can never be written: to the dead-letter exchange on its
        own (its batch is acked once the rest is committed)."""
        log.error("dead-lettering one message of a batch (%s): %s", reason, detail)
        metrics.DEAD_LETTERS.labels(reason).inc()
        headers = {"x-chat-reason": reason, "x-chat-detail": detail[:200]}
        for attempt in range(5):
            try:
                await self.bus.publish(
                    topology.DEAD, delivery.routing_key, raw, persistent=True, headers=headers
                )
                return
            except PublishError:
                await asyncio.sleep(0.1 * 2**attempt)
        log.error("could not dead-letter a message of a batch; it is dropped: %s", detail)

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


def _describe(entry: Entry) -> bytes:
    """A rejected entry as the dead-letter queue keeps it."""
    if isinstance(entry, Row):
        return orjson.dumps({"row": entry.values(0)})
    return orjson.dumps({"change": dataclasses.asdict(entry)})


def _first(exc: BaseException) -> str:
    """The first line of an error (SQLAlchemy appends the SQL and the rows' values: no bodies
    in the logs)."""
    text = str(exc)
    return text.splitlines()[0][:300] if text else type(exc).__name__
