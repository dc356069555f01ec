"""Presence between gateways: changes with a counter, heartbeats of a few bytes, and a whole
set only when a gateway cannot account for a change (in-process bus, two gateways)."""

from __future__ import annotations

import asyncio

from services.common import topology
from services.common.bus import Delivery
from services.common.bus.memory import MemoryBus
from services.gateway.presence import Presence


def test_a_missed_change_is_noticed_by_the_heartbeat_and_mended_by_a_state() -> None:
    async def main() -> None:
        bus = MemoryBus()
        await bus.connect()
        changes: dict[str, list[tuple[str, bool]]] = {"a": [], "b": []}
        sizes: list[int] = []
        gws: dict[str, Presence] = {}
        for name in ("a", "b"):

            async def changed(user: str, online: bool, name: str = name) -> None:
                changes[name].append((user, online))

            p = gws[name] = Presence(bus, name, changed, heartbeat=0.1, timeout=5)

            async def handle(d: Delivery, p: Presence = p) -> None:
                sizes.append(len(d.body))
                await p.handle(d)

            await bus.private_queue(f"gw.{name}", handle)
            await bus.bind(f"gw.{name}", topology.PRESENCE, "")
        a, b = gws["a"], gws["b"]
        await a.start()
        await b.start()
        await a.connected("alice")
        await _until(lambda: b.is_online("alice"))
        # b loses a's next change (its queue is cut off the exchange for a moment)
        await bus.unbind("gw.b", topology.PRESENCE, "")
        await a.connected("bob")
        await bus.bind("gw.b", topology.PRESENCE, "")
        assert not b.is_online("bob")
        asked = b.states_asked
        sizes.clear()
        await _until(lambda: b.is_online("bob"))  # a's heartbeat shows the gap: b asks
        assert b.states_asked == asked + 1
        assert ("bob", True) in changes["b"]
        # heartbeats carry no set: with many users online they stay small
        for i in range(300):
            await a.connected(f"user{i:03d}")
        await _until(lambda: b.is_online("user299"))
        sizes.clear()
        await asyncio.sleep(0.35)
        assert sizes and max(sizes) < 100, sizes
        await a.disconnected("alice")
        await _until(lambda: not b.is_online("alice"))
        assert b.states_asked == asked + 1  # nothing missed since: no whole set asked for
        for p in (a, b):
            await p.stop()
        await bus.close()

    asyncio.run(main())


async def _until(pred, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        assert loop.time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)
