"""Entries whose publish got no clear answer (services/gateway/doubts.py, RELIABILITY.md F11),
alone: a fake broker, store and sync markers, no sockets. The scaled test that cuts a real
broker's answers is tests/gateway/test_outage.py; these check each rule of the settling fast.

- nothing is looked up before the broker is back and the shard's writer has passed a marker;
- found in history: delivered here once, as history shows it, and its live copy published again;
- not found: dropped (the sender's retry publishes it), nothing delivered;
- a retry that finds its entry settles it at once; the pending set is bounded.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import pytest

from services.common import events, topology
from services.common.ids import iso_ms, message_id, now_ms
from services.common.schema import message_object
from services.gateway import doubts as doubts_module
from services.gateway.doubts import Doubts

ROOM = "r" * 26
ALICE = "a" * 26
SHARDS = 4


class FakeBus:
    def __init__(self) -> None:
        self.connected = True
        self.published: list[tuple[str, str, dict[str, Any]]] = []

    async def publish(self, exchange: str, routing_key: str, body: bytes, **_: Any) -> None:
        self.published.append((exchange, routing_key, orjson.loads(body)))


class FakeStore:
    def __init__(self) -> None:
        self.messages: dict[str, tuple[str, dict[str, Any]]] = {}  # id -> (sender id, as stored)
        self.changes: dict[tuple[str, str], dict[str, Any]] = {}  # (actor, cmid) -> message
        self.lookups = 0

    def stored_message(self, mid: str, user_id: str) -> dict[str, Any] | None:
        self.lookups += 1
        sender, msg = self.messages.get(mid, ("", {}))
        return msg if sender == user_id else None

    def changed_message(self, actor_id: str, client_msg_id: str) -> dict[str, Any] | None:
        self.lookups += 1
        return self.changes.get((actor_id, client_msg_id))


class FakeMarkers:
    """``caught_up`` answers what ``ready`` says; each call's shards are recorded."""

    def __init__(self) -> None:
        self.ready = True
        self.calls: list[set[int]] = []

    async def caught_up(self, timeout: float, shards: Iterable[int] | None = None) -> bool:
        self.calls.append(set(shards or ()))
        await asyncio.sleep(0)
        return self.ready


def message_entry(cmid: str, body: str = "hello") -> dict[str, Any]:
    sent = now_ms()
    msg = message_object(message_id(ALICE, cmid), ROOM, "alice", body, sent, cmid)
    return {"type": "message", "message": msg, "sender_id": ALICE, "sent_ms": sent}


Harness = tuple[Doubts, FakeBus, FakeStore, FakeMarkers, list[dict[str, Any]]]


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doubts_module, "RETRY_EVERY", 0.01)


def harness() -> Harness:
    bus, store, markers = FakeBus(), FakeStore(), FakeMarkers()
    delivered: list[dict[str, Any]] = []
    d = Doubts(bus, store, markers, lambda: SHARDS, delivered.append)  # type: ignore[arg-type]
    return d, bus, store, markers, delivered


async def until(cond: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def test_an_entry_history_holds_is_delivered_here_once_and_published_again() -> None:
    async def body() -> None:
        d, bus, store, markers, delivered = harness()
        entry = message_entry("m1")
        stored = dict(entry["message"], sent_at=iso_ms(entry["sent_ms"] + 5))  # as committed
        store.messages[stored["id"]] = (ALICE, stored)
        d.add(entry)
        await until(lambda: not d.pending)
        assert d.settled == 1
        assert markers.calls == [{topology.shard_of(ROOM, SHARDS)}]  # only the room's shard
        assert len(delivered) == 1 and delivered[0]["message"] == stored
        assert delivered[0]["sent_ms"] == entry["sent_ms"] + 5  # history's time, not ours
        [(exchange, key, live)] = bus.published
        assert (exchange, key) == (topology.MESSAGES, topology.room_live_key(ROOM))
        assert live["type"] == "live" and live["messages"][0]["message"]["id"] == stored["id"]
        d.stop()

    asyncio.run(body())


def test_an_entry_history_lacks_is_left_to_the_senders_retry() -> None:
    async def body() -> None:
        d, bus, store, _markers, delivered = harness()
        d.add(message_entry("m2"))
        await until(lambda: not d.pending)
        assert store.lookups == 1 and d.settled == 0
        assert delivered == [] and bus.published == []
        d.stop()

    asyncio.run(body())


def test_nothing_is_looked_up_before_the_broker_and_the_writers_are_back() -> None:
    async def body() -> None:
        d, bus, store, markers, delivered = harness()
        entry = message_entry("m3")
        store.messages[entry["message"]["id"]] = (ALICE, entry["message"])
        bus.connected = False
        markers.ready = False
        d.add(entry)
        await asyncio.sleep(0.1)
        assert markers.calls == [] and store.lookups == 0  # no broker: not even a marker
        bus.connected = True
        await until(lambda: len(markers.calls) >= 3)  # markers tried again and again
        assert store.lookups == 0 and d.pending  # the writer has not passed one yet
        markers.ready = True
        await until(lambda: not d.pending)
        assert d.settled == 1 and len(delivered) == 1
        d.stop()

    asyncio.run(body())


def test_a_retry_that_finds_its_entry_settles_it_at_once() -> None:
    async def body() -> None:
        d, bus, store, markers, delivered = harness()
        markers.ready = False  # the settling loop cannot get on
        entry = message_entry("m4")
        d.add(entry)
        d.found(entry, entry["message"])  # the sender's retry found it in history
        assert not d.pending and len(delivered) == 1  # delivered at once
        await until(lambda: len(bus.published) == 1)  # its live copy on its way
        markers.ready = True
        await asyncio.sleep(0.05)
        assert store.lookups == 0 and len(delivered) == 1  # nothing left to settle twice
        d.stop()

    asyncio.run(body())


def test_an_edit_is_looked_up_by_its_author_and_client_id() -> None:
    async def body() -> None:
        d, _bus, store, _markers, delivered = harness()
        sent = message_entry("m5", "draft")
        edited = dict(sent["message"], body="final", edited_at=iso_ms(now_ms()))
        entry = events.edit_entry(edited, ALICE, "e5", now_ms(), {"gw": "gw-1", "conn": "c1"})
        store.changes[(ALICE, "e5")] = edited
        d.add(entry)
        await until(lambda: not d.pending)
        assert [(e["type"], e["message"]["body"]) for e in delivered] == [("edit", "final")]
        d.stop()

    asyncio.run(body())


def test_the_pending_set_is_bounded_oldest_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doubts_module, "MAX_PENDING", 3)

    async def body() -> None:
        d, _bus, _store, markers, _delivered = harness()
        markers.ready = False
        entries = [message_entry(f"b{i}") for i in range(5)]
        for e in entries:
            d.add(e)
        assert list(d.pending) == [e["message"]["id"] for e in entries[2:]]
        d.stop()

    asyncio.run(body())
