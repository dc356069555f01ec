"""Sync markers in rounds (services/gateway/sync.py): the connections that ask together share
one marker per shard; one that asks while a round is in flight gets a marker published after
its call; a refused marker is published again (a new one); closed connections are dropped.
On a recording bus whose confirms the test releases (tests/gateway/test_publisher.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from services.common import topology
from services.common.bus import PublishError
from services.gateway.sync import SyncMarkers
from tests.gateway.test_publisher import HeldBus, run, settle


class Conn:
    def __init__(self) -> None:
        self.closed = False
        self.frames: list[dict[str, Any]] = []

    def send(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)


def synced(c: Conn) -> int:
    return sum(1 for f in c.frames if f["type"] == "synced")


def answer(markers: SyncMarkers, bus: HeldBus, i: int) -> None:
    """The writer of the i-th published marker's shard answers it."""
    _, doc, _ = bus.durable[i]
    markers.answered(doc["marker"], doc["shard"])


def test_a_connect_burst_shares_one_marker_per_shard_and_latecomers_get_a_later_one() -> None:
    async def body() -> None:
        bus = HeldBus()
        markers = SyncMarkers(bus, "gw1", lambda: 4)  # type: ignore[arg-type]
        first = [Conn() for _ in range(500)]
        calls = [asyncio.ensure_future(markers.publish(c)) for c in first]  # type: ignore[arg-type]
        await settle()
        assert len(bus.durable) == 4  # one marker, into each of the 4 shards at once
        assert sorted(key for key, _, _ in bus.durable) == sorted(
            topology.sync_key(k) for k in range(4)
        )
        assert len({doc["marker"] for _, doc, _ in bus.durable}) == 1
        # asked while that round is in flight: not covered by it (its rooms were bound later)
        late = Conn()
        late_call = asyncio.ensure_future(markers.publish(late))  # type: ignore[arg-type]
        await settle()
        assert len(bus.durable) == 4 and not any(c.done() for c in calls)
        for i in range(4):
            bus.confirm(i)
        await settle()
        assert all(c.done() for c in calls) and not late_call.done()
        assert len(bus.durable) == 8  # the next round, for the latecomer
        assert bus.durable[4][1]["marker"] != bus.durable[0][1]["marker"]
        for i in range(3):
            answer(markers, bus, i)
        assert all(synced(c) == 0 for c in first)  # not before every shard has answered
        answer(markers, bus, 3)
        assert all(synced(c) == 1 for c in first) and synced(late) == 0
        for i in range(4, 8):
            bus.confirm(i)
            answer(markers, bus, i)
        await settle()
        assert late_call.done() and synced(late) == 1
        assert markers.rounds == 2 and not markers.pending

    run(body)


def test_a_refused_marker_is_published_again_and_closed_connections_are_dropped() -> None:
    async def body() -> None:
        bus = HeldBus()
        markers = SyncMarkers(bus, "gw1", lambda: 2)  # type: ignore[arg-type]
        a, b = Conn(), Conn()
        calls = [asyncio.ensure_future(markers.publish(c)) for c in (a, b)]  # type: ignore[arg-type]
        await settle()
        bus.confirm(0)
        bus.confirm(1, PublishError("no leader for shard 1"))
        await settle()
        answer(markers, bus, 0)  # an answer for the refused round: it tells nobody
        b.closed = True
        deadline = asyncio.get_running_loop().time() + 5
        while len(bus.durable) < 4:  # after the retry's back-off (0.1 s)
            assert asyncio.get_running_loop().time() < deadline, bus.durable
            await asyncio.sleep(0.01)
        await settle()
        assert len(bus.durable) == 4, bus.durable
        _, again, _ = bus.durable[2]
        assert again["marker"] != bus.durable[0][1]["marker"]
        assert markers.pending[again["marker"]][0] == [a]  # b closed meanwhile: dropped
        for i in (2, 3):
            bus.confirm(i)
            answer(markers, bus, i)
        await settle()
        assert all(c.done() for c in calls)
        assert synced(a) == 1 and synced(b) == 0

    run(body)
