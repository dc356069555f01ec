"""API.md: the server answers the auth frame with ``ready``. Under load a client must not get
room traffic or presence before it: a client that treats the first frame as the answer to its
auth (as the protocol allows) would drop or misread them.

Found by the broker-outage scenario (presence frames arriving before ``ready``); reproduced here
without any fault: a member connects again and again while its room is busy.
"""

from __future__ import annotations

import asyncio

import orjson
import websockets

from tests.faults.ledger import Ledger
from tests.faults.peer import Peer
from tests.faults.scene import async_http, now
from tests.faults.seed import Seeder
from tests.faults.traffic import Traffic, wait_until
from tests.support.client import TEST_ORIGIN, Stack


def test_ready_is_the_first_frame_even_in_a_busy_room(scaled: Stack, shared_seeder: Seeder) -> None:
    users = shared_seeder.users(6, prefix="r")
    room = shared_seeder.rooms([users])[0]

    async def scenario() -> list[str]:
        http = async_http()
        senders = [
            Peer(u, lambda: scaled.gateway_urls, scaled.history_url, [room.id], http, start=i)
            for i, u in enumerate(users[:5])
        ]
        for p in senders:
            p.start()
        await wait_until(lambda: all(p.synced.is_set() for p in senders), 30, "senders ready")
        traffic = Traffic(Ledger("ready-first"), [(p, room.id) for p in senders], interval=0.01)
        traffic.start()
        await wait_until(lambda: len(traffic.ledger.acked) >= 50, 20, "a busy room")
        late = users[5]
        firsts: list[str] = []
        started = now()
        try:
            for i in range(30):
                base = scaled.gateway_urls[i % len(scaled.gateway_urls)]
                async with websockets.connect(
                    base.replace("http", "ws") + "/ws", origin=TEST_ORIGIN
                ) as ws:
                    await ws.send(
                        orjson.dumps({"type": "auth", "token": late.access_token}).decode()
                    )
                    first = orjson.loads(await asyncio.wait_for(ws.recv(), 10))
                    firsts.append(first["type"])
        finally:
            await traffic.stop()
            await asyncio.gather(*(p.stop() for p in senders))
            await http.aclose()
        print(
            f"\nRELIABILITY ready-first: {len(firsts)} connects in {now() - started:.1f}s, "
            f"first frames: { {k: firsts.count(k) for k in set(firsts)} }"
        )
        return firsts

    firsts = asyncio.run(scenario())
    assert set(firsts) == {"ready"}, firsts
