"""The writer against the in-process bus and SQLite: batching, idempotency, markers, faults."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from services.common import topology
from services.common.bus import Bus, Delivery
from services.common.models import Message, Room
from services.history import metrics, store
from services.history.writer import HistoryWriter, _Entry

from .helpers import add_room, count_rows, eventually, marker, message_ids, publish, settings, wire

pytestmark = pytest.mark.anyio

ROOMS = ["r" + str(i).zfill(25) for i in range(3)]
ALICE = "u" + "a" * 25


def sample(metric: Any, suffix: str = "_total", **labels: str) -> float:
    for family in metric.collect():
        for s in family.samples:
            if s.name.endswith(suffix) and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def unacked(bus: Bus, queue: str = topology.history_queue(0)) -> int:
    return int(bus._queues[queue].unacked)  # type: ignore[attr-defined]


@pytest.fixture
async def writer(sqlite_engine: Engine, memory_bus: Bus) -> AsyncIterator[HistoryWriter]:
    w = HistoryWriter(settings(history_batch_size=50), memory_bus, sqlite_engine, max_backoff=0.2)
    await w.start()
    yield w
    await w.stop()


class InsertCounter:
    """Counts INSERT statements into messages (one multi-row INSERT per batch)."""

    def __init__(self, engine: Engine) -> None:
        self.inserts: list[int] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO MESSAGES"):
            self.inserts.append(statement.count("(?,"))  # one VALUES tuple a row


async def test_batches_are_multi_row_inserts_and_bump_rooms(
    sqlite_engine: Engine, memory_bus: Bus
) -> None:
    for room in ROOMS:
        add_room(sqlite_engine, room, [(ALICE, "alice")])
    counter = InsertCounter(sqlite_engine)
    written_before = sample(metrics.WRITTEN)
    expected = {}
    for i in range(300):
        room = ROOMS[i % 3]
        key, body, mid = wire(room, ALICE, f"c{i}", body=f"body {i}", sent_ms=1_000_000 + i)
        expected[mid] = (room, f"body {i}", 1_000_000 + i)
        await publish(memory_bus, key, body)
    w = HistoryWriter(settings(history_batch_size=50), memory_bus, sqlite_engine)
    await w.start()
    try:
        await eventually(lambda: count_rows(sqlite_engine) == 300, what="300 rows")
        await eventually(lambda: unacked(memory_bus) == 0, what="every delivery acked")
    finally:
        await w.stop()
    assert await memory_bus.queue_depth(topology.history_queue(0)) == 0
    # batched: 300 messages in at most a handful of multi-row statements of <= 50 rows
    assert sum(counter.inserts) == 300
    assert max(counter.inserts) <= 50
    assert len(counter.inserts) <= 10, counter.inserts
    assert len(counter.inserts) == w.batches
    with sqlite_engine.connect() as conn:
        rows = conn.execute(select(Message)).all()
        activity = dict(conn.execute(select(Room.id, Room.last_activity_ms)).all())
    assert {r.id: (r.room_id, r.body, r.sent_ms) for r in rows} == expected
    assert all(r.sender == "alice" and r.sender_id == ALICE for r in rows)
    assert activity == {room: 1_000_000 + 297 + i for i, room in enumerate(ROOMS)}
    assert sample(metrics.WRITTEN) - written_before == 300


async def test_duplicates_become_one_row(
    sqlite_engine: Engine, memory_bus: Bus, writer: HistoryWriter
) -> None:
    dups_before = sample(metrics.DUPLICATES)
    key, body, mid = wire(ROOMS[0], ALICE, "same-client-id")
    for _ in range(3):  # same batch
        await publish(memory_bus, key, body)
    await eventually(lambda: count_rows(sqlite_engine) == 1)
    await eventually(lambda: unacked(memory_bus) == 0)
    for _ in range(2):  # later batches: already stored
        await publish(memory_bus, key, body)
        await eventually(lambda: unacked(memory_bus) == 0 and memory_bus_empty(memory_bus))
    # a retry re-sent later with a new timestamp is still the same message
    key2, body2, mid2 = wire(ROOMS[0], ALICE, "same-client-id", sent_ms=5)
    assert mid2 == mid
    await publish(memory_bus, key2, body2)
    await eventually(lambda: sample(metrics.DUPLICATES) - dups_before >= 5)
    await eventually(lambda: unacked(memory_bus) == 0)
    assert message_ids(sqlite_engine) == [mid]
    assert sample(metrics.DUPLICATES) - dups_before == 5


def memory_bus_empty(bus: Bus) -> bool:
    return not bus._queues[topology.history_queue(0)].ready  # type: ignore[attr-defined]


class SlowWrites:
    """Wraps store.write_batch: each batch commits only after a delay (or fails while down)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> None:
        self.delay = delay
        self.down = threading.Event()
        self.failures = 0
        self.real = store.write_batch
        monkeypatch.setattr(store, "write_batch", self)

    def __call__(self, engine: Engine, rows: Any) -> Any:
        if self.down.is_set():
            self.failures += 1
            raise OperationalError("INSERT INTO messages", {}, ConnectionError("server gone"))
        threading.Event().wait(self.delay)
        return self.real(engine, rows)


async def test_marker_answered_only_after_preceding_messages_commit(
    sqlite_engine: Engine, memory_bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    SlowWrites(monkeypatch, delay=0.05)  # each commit takes 50 ms: an early answer shows
    answers: list[tuple[str, set[str]]] = []

    async def on_event(delivery: Delivery) -> None:
        event_doc = orjson.loads(delivery.body)
        if event_doc.get("type") == "synced":  # what is committed at the moment of the answer?
            answers.append((event_doc["marker"], set(message_ids(sqlite_engine))))

    await memory_bus.private_queue("gw-test-events", on_event)
    await memory_bus.bind("gw-test-events", topology.EVENTS, topology.gateway_key("gw-a"))
    before: dict[str, set[str]] = {}
    sent: set[str] = set()
    w = HistoryWriter(
        settings(history_batch_size=20, history_batch_ms=50), memory_bus, sqlite_engine
    )
    await w.start()
    try:
        for wave in range(4):
            for i in range(15 + wave * 10):  # markers land mid-batch and across batches
                key, body, mid = wire(ROOMS[wave % 3], ALICE, f"w{wave}-{i}")
                await publish(memory_bus, key, body)
                sent.add(mid)
            before[f"mk{wave}"] = set(sent)
            await publish(memory_bus, *marker(f"mk{wave}", "gw-a"))
        await eventually(lambda: len(answers) == 4, what="four synced answers")
    finally:
        await w.stop()
    assert [m for m, _ in answers] == ["mk0", "mk1", "mk2", "mk3"]
    for name, committed in answers:
        assert before[name] <= committed, f"{name} answered before its messages were committed"
    assert unacked(memory_bus) == 0


async def test_database_outage_keeps_batch_unacked_then_drains(
    sqlite_engine: Engine, memory_bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    slow = SlowWrites(monkeypatch)
    answers: list[str] = []

    async def on_event(delivery: Delivery) -> None:
        answers.append(orjson.loads(delivery.body)["marker"])

    await memory_bus.private_queue("gw-b-events", on_event)
    await memory_bus.bind("gw-b-events", topology.EVENTS, topology.gateway_key("gw-b"))
    retries_before = sample(metrics.DB_RETRIES)
    w = HistoryWriter(settings(history_batch_size=50), memory_bus, sqlite_engine, max_backoff=0.2)
    await w.start()
    try:
        slow.down.set()
        ids = []
        for i in range(120):
            key, body, mid = wire(ROOMS[1], ALICE, f"o{i}")
            ids.append(mid)
            await publish(memory_bus, key, body)
        await publish(memory_bus, *marker("during-outage", "gw-b"))
        await eventually(lambda: slow.failures >= 4, what="several failed tries")
        # nothing written, nothing acked, nothing dead-lettered, the marker not answered
        assert count_rows(sqlite_engine) == 0
        assert unacked(memory_bus) == 100  # prefetch = 2 x batch size, all held
        assert await memory_bus.queue_depth(topology.DEAD_QUEUE) == 0
        assert answers == []
        slow.down.clear()
        await eventually(lambda: count_rows(sqlite_engine) == 120, what="the backlog drained")
        await eventually(lambda: answers == ["during-outage"], what="the marker answered")
        await eventually(lambda: unacked(memory_bus) == 0)
    finally:
        await w.stop()
    assert sorted(message_ids(sqlite_engine)) == sorted(ids)
    assert await memory_bus.queue_depth(topology.DEAD_QUEUE) == 0
    assert sample(metrics.DB_RETRIES) - retries_before >= 4


async def test_poison_goes_to_dead_letter_queue_and_the_rest_flow(
    sqlite_engine: Engine, memory_bus: Bus
) -> None:
    with sqlite_engine.begin() as conn:  # a row the database itself rejects
        conn.execute(
            text(
                "CREATE TRIGGER reject_poison BEFORE INSERT ON messages "
                "WHEN NEW.body = 'REJECT-ME' BEGIN SELECT RAISE(ABORT, 'rejected'); END"
            )
        )
    dead: list[bytes] = []

    async def on_dead(delivery: Delivery) -> None:
        dead.append(delivery.body)
        await delivery.ack()

    dl_before = {
        r: sample(metrics.DEAD_LETTERS, reason=r) for r in ("undecodable", "invalid", "rejected")
    }
    good: list[str] = []
    poison: list[bytes] = []
    room = ROOMS[2]
    for i in range(60):
        if i == 10:
            poison.append(b"{not json")
            await publish(memory_bus, topology.room_msg_key(room, 1), poison[-1])
        if i == 20:  # valid JSON, missing sender_id
            _, body, _ = wire(room, ALICE, "bad-fields")
            doc = orjson.loads(body)
            del doc["sender_id"]
            poison.append(orjson.dumps(doc))
            await publish(memory_bus, topology.room_msg_key(room, 1), poison[-1])
        if i == 30:  # the routing key says another room
            _, body, _ = wire(ROOMS[0], ALICE, "wrong-room")
            poison.append(body)
            await publish(memory_bus, topology.room_msg_key(room, 1), body)
        if i == 40:
            _, body, _ = wire(room, ALICE, "db-rejects", body="REJECT-ME")
            poison.append(body)
            await publish(memory_bus, topology.room_msg_key(room, 1), body)
        key, body, mid = wire(room, ALICE, f"g{i}")
        good.append(mid)
        await publish(memory_bus, key, body)
    w = HistoryWriter(settings(history_batch_size=50), memory_bus, sqlite_engine)
    await w.start()
    try:
        await eventually(lambda: count_rows(sqlite_engine) == 60, what="the good messages")
        await eventually(lambda: unacked(memory_bus) == 0)
        await memory_bus.consume(topology.DEAD_QUEUE, on_dead, prefetch=10)
        await eventually(lambda: len(dead) == 4, what="four dead letters")
    finally:
        await w.stop()
    assert sorted(message_ids(sqlite_engine)) == sorted(good)
    assert sorted(dead) == sorted(poison)
    got = {r: sample(metrics.DEAD_LETTERS, reason=r) - dl_before[r] for r in dl_before}
    assert got == {"undecodable": 1, "invalid": 2, "rejected": 1}


async def test_a_delivery_that_keeps_coming_back_is_written_alone(
    sqlite_engine: Engine, memory_bus: Bus, monkeypatch: pytest.MonkeyPatch
) -> None:
    """delivery_count >= 2 (it survived crashes): row by row, so it cannot sink a batch again."""
    calls: list[str] = []
    monkeypatch.setattr(store, "write_each", _spy(store.write_each, calls, "each"))
    monkeypatch.setattr(store, "write_batch", _spy(store.write_batch, calls, "batch"))
    w = HistoryWriter(settings(), memory_bus, sqlite_engine)
    key, body, mid = wire(ROOMS[0], ALICE, "crashy")
    delivery = Delivery(body, key, topology.MESSAGES, redelivered=True, delivery_count=3)
    acked = asyncio.Event()

    async def ack(multiple: bool = False) -> None:
        acked.set()

    delivery._ack = ack
    await w._process([_Entry.of(delivery)])
    assert acked.is_set() and calls == ["each"] and message_ids(sqlite_engine) == [mid]


def _spy(fn: Any, calls: list[str], name: str) -> Any:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(name)
        return fn(*args, **kwargs)

    return wrapper


async def test_a_gateways_batch_is_written_and_its_bad_entries_go_alone_to_the_dead_letters(
    sqlite_engine: Engine, memory_bus: Bus
) -> None:
    """issue 15: one delivery carries many messages; an entry that can never be written (bad
    fields) and one the database refuses are dead-lettered alone, the rest of the batch is
    written, and the delivery is acked (the gateways' senders were acked on its confirm)."""
    room = ROOMS[1]
    add_room(sqlite_engine, room, [(ALICE, "alice")])
    with sqlite_engine.begin() as conn:  # a row the database itself rejects
        conn.execute(
            text(
                "CREATE TRIGGER reject_in_batch BEFORE INSERT ON messages "
                "WHEN NEW.body = 'REJECT-ME' BEGIN SELECT RAISE(ABORT, 'rejected'); END"
            )
        )
    events, good = [], []
    for i in range(20):
        _, body, mid = wire(room, ALICE, f"b{i}", body="REJECT-ME" if i == 7 else f"b {i}")
        doc = orjson.loads(body)
        if i == 3:
            del doc["sender_id"]
        elif i != 7:
            good.append(mid)
        events.append(doc)
    batch = orjson.dumps({"type": "batch", "messages": events})
    dead: list[dict[str, Any]] = []

    async def on_dead(delivery: Delivery) -> None:
        dead.append(orjson.loads(delivery.body))
        await delivery.ack()

    await memory_bus.consume(topology.DEAD_QUEUE, on_dead, prefetch=10)
    w = HistoryWriter(settings(history_batch_size=50), memory_bus, sqlite_engine)
    await w.start()
    try:
        await publish(memory_bus, topology.history_batch_key(0), batch)
        await eventually(lambda: count_rows(sqlite_engine) == 18, what="the 18 good messages")
        await eventually(lambda: unacked(memory_bus) == 0, what="the batch acked")
        await eventually(lambda: len(dead) == 2, what="two dead letters")
    finally:
        await w.stop()
    assert sorted(message_ids(sqlite_engine)) == sorted(good)
    bad_fields = [d for d in dead if "row" not in d]
    refused = [d["row"] for d in dead if "row" in d]
    assert [d["message"]["client_msg_id"] for d in bad_fields] == ["b3"]  # as it came
    assert [r["client_msg_id"] for r in refused] == ["b7"] and refused[0]["body"] == "REJECT-ME"
