"""Edit and delete entries through the writer, as gateways publish them: in a batch next to
messages (the in-process bus of the all-in-one mode, and the real RabbitMQ with MariaDB), in
queue order, acked only once committed, a malformed entry dead-lettered alone, a redelivered
change applied once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.common import events, topology
from services.common.bus import Bus, Delivery
from services.common.models import Message, MessageChange
from services.history import metrics
from services.history.store import history_engine
from services.history.writer import HistoryWriter

from .helpers import (
    add_room,
    batch,
    change_doc,
    eventually,
    message_doc,
    publish,
    settings,
    single,
    wire,
)

pytestmark = pytest.mark.anyio

ALICE, BOB = "u" + "a" * 25, "u" + "b" * 25
ROOM = "r" + "w" * 25


def row(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(
            select(Message.body, Message.edited_ms, Message.deleted, Message.kind).where(
                Message.id == message_id
            )
        ).first()


def change_count(engine: Engine) -> int:
    with engine.connect() as conn:
        return len(conn.execute(select(MessageChange.id)).all())


def sample(**labels: str) -> float:
    for family in metrics.CHANGES.collect():
        for s in family.samples:
            if s.name.endswith("_total") and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


@pytest.fixture
async def dead(memory_bus: Bus) -> AsyncIterator[list[bytes]]:
    got: list[bytes] = []

    async def on_dead(delivery: Delivery) -> None:
        got.append(delivery.body)
        await delivery.ack()

    await memory_bus.consume(topology.DEAD_QUEUE, on_dead, prefetch=10)
    yield got


async def test_a_gateway_batch_of_messages_edits_deletes_and_a_notice(
    sqlite_engine: Engine, memory_bus: Bus, dead: list[bytes]
) -> None:
    add_room(sqlite_engine, ROOM, [(ALICE, "alice"), (BOB, "bob")])
    m1, m2 = wire(ROOM, ALICE, "b-1", body="first"), wire(ROOM, ALICE, "b-2", body="second")
    bad = change_doc("edit", ROOM, m1[2], ALICE, "bad-edit", body="never")
    del bad["actor_id"]  # malformed: dead-lettered alone, the rest of the batch is written
    notice = events.notice_entry(ROOM, 3, "joined", username="bob", by="alice", sent_ms=5)
    docs = [
        message_doc(m1),
        change_doc("edit", ROOM, m1[2], ALICE, "b-edit", body="first, fixed", at_ms=100),
        message_doc(m2),
        bad,
        change_doc("delete", ROOM, m2[2], ALICE, "b-del", at_ms=101),
        change_doc("edit", ROOM, m1[2], ALICE, "b-edit-2", body="first, final", at_ms=102),
        notice,
    ]
    key, body = batch(docs)
    w = HistoryWriter(settings(), memory_bus, sqlite_engine)
    await w.start()
    try:
        # as a gateway publishes: persistent, and the in-process bus confirms it only once the
        # writer has acked it, after the commit: when this returns, it is on disk
        await memory_bus.publish(topology.MESSAGES, key, body, mandatory=True, persistent=True)
        assert row(sqlite_engine, m1[2]) == ("first, final", 102, False, "text")
        assert row(sqlite_engine, m2[2]) == (None, None, True, "text")
        assert row(sqlite_engine, notice["message"]["id"]) == (None, None, False, "notice")
        await eventually(lambda: len(dead) == 1, what="the malformed entry dead-lettered")
    finally:
        await w.stop()
    assert orjson.loads(dead[0])["client_msg_id"] == "bad-edit"
    assert change_count(sqlite_engine) == 3


async def test_a_redelivered_edit_is_applied_once(sqlite_engine: Engine, memory_bus: Bus) -> None:
    add_room(sqlite_engine, ROOM, [(ALICE, "alice")])
    m = wire(ROOM, ALICE, "r-1", body="v0")
    first = single(change_doc("edit", ROOM, m[2], ALICE, "r-edit-1", body="v1", at_ms=1))
    second = single(change_doc("edit", ROOM, m[2], ALICE, "r-edit-2", body="v2", at_ms=2))
    dups = sample(kind="edit", status="duplicate")
    await publish(memory_bus, m[0], m[1])
    for key, body in (first, second, first, first):  # the first edit comes back twice, late
        await publish(memory_bus, key, body)
    w = HistoryWriter(settings(history_batch_size=2), memory_bus, sqlite_engine)
    await w.start()
    try:
        await eventually(lambda: sample(kind="edit", status="duplicate") - dups == 2)
    finally:
        await w.stop()
    assert row(sqlite_engine, m[2])[:2] == ("v2", 2)
    assert change_count(sqlite_engine) == 2


@pytest.mark.scaled
async def test_rabbitmq_and_mariadb(amqp_bus: Bus, mysql_url: str) -> None:
    """The same path on the scaled mode's parts: a batch and single entries on the real
    quorum queue, written to MariaDB, the FULLTEXT index in step."""
    engine = history_engine(mysql_url)
    try:
        await _scaled(amqp_bus, engine)
    finally:
        engine.dispose()


async def _scaled(bus: Bus, engine: Engine) -> None:
    from services.history.search import search
    from services.history.searchtext import parse_query

    add_room(engine, ROOM, [(ALICE, "alice")])
    m1, m2 = wire(ROOM, ALICE, "q-1", body="apricot jam"), wire(ROOM, ALICE, "q-2", body="plum")
    await publish(bus, *batch([message_doc(m1), message_doc(m2)]))
    edit = single(change_doc("edit", ROOM, m1[2], ALICE, "q-edit", body="quince jam", at_ms=9))
    await publish(bus, *edit)
    await publish(bus, *edit)  # twice: applied once
    await publish(bus, *batch([change_doc("delete", ROOM, m2[2], ALICE, "q-del", at_ms=10)]))
    w = HistoryWriter(settings(), bus, engine)
    await w.start()
    try:
        await eventually(lambda: change_count(engine) == 2, what="both changes recorded")
    finally:
        await w.stop()
    assert row(engine, m1[2])[:2] == ("quince jam", 9)
    assert row(engine, m2[2])[:3] == (None, None, True)
    hits = search(engine, ALICE, parse_query("jam"), limit=5).messages
    assert [m["id"] for m in hits] == [m1[2]]
    assert search(engine, ALICE, parse_query("apricot"), limit=5).messages == []
    assert search(engine, ALICE, parse_query("plum"), limit=5).messages == []
