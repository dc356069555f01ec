"""A scene: seeded users in group rooms, one resuming client per user spread over the gateways,
some of them sending all along; the checks every fault scenario ends with."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.ledger import Ledger, Verdict, wait_verified
from tests.faults.peer import Peer
from tests.faults.seed import Seeded, SeededRoom, Seeder
from tests.faults.traffic import Traffic, wait_no_gaps, wait_until


def async_http() -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=32)
    return httpx.AsyncClient(timeout=10, limits=limits)


@dataclass
class Scene:
    name: str
    rooms: list[SeededRoom]
    peers: list[Peer]
    ledger: Ledger
    traffic: Traffic
    http: httpx.AsyncClient
    spare: list[Seeded] = field(default_factory=list)  # members with no client yet

    @property
    def room_ids(self) -> list[str]:
        return [r.id for r in self.rooms]

    def peers_on(self, gateway_url: str) -> list[Peer]:
        return [p for p in self.peers if p.current_gateway == gateway_url and p.connected.is_set()]

    async def close(self) -> None:
        await asyncio.gather(*(p.stop() for p in self.peers), return_exceptions=True)
        await self.http.aclose()


async def open_scene(
    name: str,
    seeder: Seeder,
    gateways: Callable[[], list[str]],
    history_url: str,
    *,
    rooms: int,
    members: int,
    senders_per_room: int,
    spare_per_room: int = 0,
    interval: float = 0.05,
    answer_timeout: float = 12.0,
    batch: int = 0,
    ready_timeout: float = 10.0,
    spread: bool = True,
) -> Scene:
    """``batch``: start the clients that many at a time, each batch once the previous one is
    synced (0: all at once); ``ready_timeout``: how long a client waits for ``ready``;
    ``spread``: clients start on every gateway in turn (else all on the first one)."""
    users = seeder.users(rooms * (members + spare_per_room), prefix="f")
    size = members + spare_per_room
    seeded = seeder.rooms([users[i * size : (i + 1) * size] for i in range(rooms)], name=name)
    http = async_http()
    peers: list[Peer] = []
    spare: list[Seeded] = []
    senders: list[tuple[Peer, str]] = []
    for room in seeded:
        for j, user in enumerate(room.members):
            if j >= members:
                spare.append(user)
                continue
            start = len(peers) if spread else 0
            peer = Peer(user, gateways, history_url, [room.id], http, start=start)
            peers.append(peer)
            if j < senders_per_room:
                senders.append((peer, room.id))
    for p in peers:
        p.ready_timeout = ready_timeout
    step = batch or len(peers)
    for k in range(0, len(peers), step):
        part = peers[k : k + step]
        for p in part:
            p.start()
        await wait_until(
            lambda part=part: all(p.synced.is_set() for p in part),
            60,
            f"{k + len(part)} of {len(peers)} clients connected and synced",
        )
    ledger = Ledger(name)
    traffic = Traffic(ledger, senders, interval=interval, answer_timeout=answer_timeout)
    return Scene(name, seeded, peers, ledger, traffic, http, spare)


async def finish(
    scene: Scene, database_url: str, drain_timeout: float = 60.0
) -> tuple[Verdict, float, list[str]]:
    """Stop sending (in-flight messages finish), wait for history to hold every acked message,
    then for every client's merged view to equal history. (verdict, drain seconds, gaps)."""
    await scene.traffic.stop()
    verdict, drained = await asyncio.to_thread(
        wait_verified, scene.ledger, database_url, scene.room_ids, drain_timeout
    )
    problems = await wait_no_gaps(scene.peers, verdict.rows, scene.ledger)
    return verdict, drained, problems


def summary(scene: Scene) -> dict[str, Any]:
    return {
        "clients": len(scene.peers),
        "rooms": len(scene.rooms),
        "senders": len(scene.traffic.senders),
        "live_deliveries": sum(p.live for p in scene.peers),
        "fetched_on_resume": sum(p.fetched for p in scene.peers),
        "reconnects": sum(max(0, p.conns - 1) for p in scene.peers),
    }


def since(t0: float, t: float | None) -> float | None:
    return None if t is None else round(t - t0, 2)


def now() -> float:
    return time.monotonic()
