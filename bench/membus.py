"""The in-process bus (all-in-one mode) with few and with many bindings (issue 13).

    python -m bench.membus '{"bindings": [20, 20000], "messages": 20000}'

Each run binds one private queue to ``room.<id>.*`` for N rooms (as a gateway with N rooms
does), then publishes to one of those rooms as fast as it can while the queue's consumer drains
it; it reports publishes per second and the cost of one publish. Routing goes through the topic
trie (services/common/bus/routing.py): the figure should not depend on N. The linear scan it
replaced is run on the same keys for comparison (``scan``: every binding tested per publish).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from services.common import topology
from services.common.bus.base import Delivery, topic_matches
from services.common.bus.memory import MemoryBus


async def one(n: int, messages: int) -> dict[str, Any]:
    bus = MemoryBus()
    await bus.connect()
    got = 0
    done = asyncio.Event()

    async def handler(_: Delivery) -> None:
        nonlocal got
        got += 1
        if got >= messages:
            done.set()

    await bus.private_queue("gw.bench", handler)
    rooms = [f"{i:026d}" for i in range(n)]
    t0 = time.perf_counter()
    await bus.bind_many("gw.bench", [(topology.MESSAGES, topology.room_binding(r)) for r in rooms])
    bind_s = time.perf_counter() - t0
    key = topology.room_msg_key(rooms[n // 2], 1)
    body = b'{"type":"message"}'
    t0 = time.perf_counter()
    for i in range(messages):
        await bus.publish(topology.MESSAGES, key, body)
        if i % 256 == 0:
            await asyncio.sleep(0)  # let the consumer drain
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - t0
    # the old routing, for comparison: every binding's pattern tested against the key
    patterns = [topology.room_binding(r) for r in rooms]
    reps = max(1, min(200, 2_000_000 // max(1, n)))
    t1 = time.perf_counter()
    for _ in range(reps):
        _hits = [p for p in patterns if topic_matches(p, key)]
    scan_s = (time.perf_counter() - t1) / reps
    await bus.close()
    return {
        "bindings": n,
        "publishes_per_s": round(messages / elapsed),
        "publish_us": round(elapsed / messages * 1e6, 2),
        "bind_all_ms": round(bind_s * 1000, 1),
        "scan_route_us": round(scan_s * 1e6, 1),
        "scan_publishes_per_s": round(1 / scan_s) if scan_s else None,
    }


def main() -> None:
    spec = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    sizes = spec.get("bindings", [20, 20000])
    messages = int(spec.get("messages", 20000))
    runs = [asyncio.run(one(n, messages)) for n in sizes]
    print(json.dumps({"runs": runs}), flush=True)


if __name__ == "__main__":
    main()
