"""The gateway's publisher alone (issue 15): history in batches, live copies after the confirm,
on a recording bus whose confirms the test releases."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from services.common import topology
from services.common.bus import PublishError
from services.common.bus.memory import MemoryBus
from services.gateway.publisher import Publisher


class HeldBus(MemoryBus):
    """Records publishes in the order they reach the broker; a persistent one waits until the
    test confirms (or fails) it."""

    def __init__(self) -> None:
        super().__init__()
        self.durable: list[tuple[str, dict[str, Any], asyncio.Future[None]]] = []
        self.transient: list[tuple[str, dict[str, Any]]] = []
        self.order: list[str] = []

    async def publish(self, exchange: str, routing_key: str, body: bytes, **kw: Any) -> None:
        self.order.append(routing_key)
        if not kw.get("persistent"):
            self.transient.append((routing_key, orjson.loads(body)))
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.durable.append((routing_key, orjson.loads(body), fut))
        await fut

    def confirm(self, i: int, error: Exception | None = None) -> None:
        fut = self.durable[i][2]
        if error is None:
            fut.set_result(None)
        else:
            fut.set_exception(error)


def event(room: str, n: int) -> dict[str, Any]:
    return {"type": "message", "message": {"id": f"m{n}", "room": room}, "sender_id": "s"}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


def run(body: Any) -> None:
    asyncio.run(body())


def test_what_arrives_together_goes_as_one_batch_and_is_acked_on_its_confirm() -> None:
    async def body() -> None:
        bus = HeldBus()
        local: list[str] = []
        pub = Publisher(bus, lambda: 1, lambda e: local.append(e["message"]["id"]))
        sends = [asyncio.ensure_future(pub.publish(event(f"r{i % 3}", i))) for i in range(10)]
        await settle()
        assert len(bus.durable) == 1  # one turn of the loop: one message for the shard
        key, doc, _ = bus.durable[0]
        assert key == topology.history_batch_key(0) and doc["type"] == "batch"
        assert [m["message"]["id"] for m in doc["messages"]] == [f"m{i}" for i in range(10)]
        # the live copies right behind the batch, one per room, before any confirm: a gateway
        # that dies now has sent them with it; the broker routes them after the batch
        assert bus.order == [
            topology.history_batch_key(0),
            *(topology.room_live_key(f"r{i}") for i in range(3)),
        ]
        assert not any(s.done() for s in sends) and local == []
        # while it is in flight, more arrive: they wait for it, then go together
        later = [asyncio.ensure_future(pub.publish(event("r0", i))) for i in range(10, 15)]
        await settle()
        assert len(bus.durable) == 1
        bus.confirm(0)
        await asyncio.gather(*sends)
        assert local == [f"m{i}" for i in range(10)]  # the local members once it is confirmed
        await settle()
        assert len(bus.durable) == 2 and len(bus.durable[1][1]["messages"]) == 5
        bus.confirm(1)
        await asyncio.gather(*later)
        assert pub.batches == 2 and pub.messages == 15

    run(body)


def test_a_refused_batch_fails_every_sender_and_delivers_nothing() -> None:
    async def body() -> None:
        bus = HeldBus()
        local: list[str] = []
        pub = Publisher(bus, lambda: 1, lambda e: local.append(e["message"]["id"]))
        sends = [asyncio.ensure_future(pub.publish(event("r", i))) for i in range(3)]
        await settle()
        bus.confirm(0, PublishError("nack"))
        for s in sends:
            with pytest.raises(PublishError):
                await s
        assert local == []  # (its live copies went out: a nacked message is retried, same id)
        again = asyncio.ensure_future(pub.publish(event("r", 9)))
        await settle()
        bus.confirm(1)
        await again
        assert local == ["m9"]

    run(body)


def test_shards_batch_apart() -> None:
    async def body() -> None:
        bus = HeldBus()
        pub = Publisher(bus, lambda: 4, lambda e: None)
        rooms = [f"room{i}" for i in range(20)]
        shards = {topology.shard_of(r, 4) for r in rooms}
        sends = [asyncio.ensure_future(pub.publish(event(r, i))) for i, r in enumerate(rooms)]
        await settle()
        assert sorted(k for k, _, _ in bus.durable) == sorted(
            topology.history_batch_key(k) for k in shards
        )
        for k, doc, _ in bus.durable:  # every message in its room's shard
            shard = int(k.rsplit(".", 1)[1])
            assert all(topology.shard_of(m["message"]["room"], 4) == shard for m in doc["messages"])
        for i in range(len(bus.durable)):
            bus.confirm(i)
        await asyncio.gather(*sends)
        assert sorted(k for k, _ in bus.transient) == sorted(
            topology.room_live_key(r) for r in rooms
        )

    run(body)
