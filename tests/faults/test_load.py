"""Scenario 7: several hundred clients over the 3 gateways of the scaled cluster for a bounded
time; every message is delivered live to every member's connection exactly once (counted), and
every acked message is stored once.

Users and rooms are seeded straight into the database (tests/faults/seed.py): hashing hundreds
of passwords through the auth service would measure argon2, not the chat.
"""

from __future__ import annotations

import asyncio
import os
import statistics

import pytest

from tests.faults.ledger import Ledger, wait_verified
from tests.faults.peer import Peer
from tests.faults.report import report
from tests.faults.scene import async_http, now
from tests.faults.seed import Seeder
from tests.faults.traffic import Traffic, wait_until
from tests.support import services as svc
from tests.support.client import Stack
from tools.cluster import Cluster


def run_load(
    stack: Stack,
    cluster: Cluster,
    seeder: Seeder,
    *,
    clients: int,
    room_size: int,
    senders_per_room: int,
    interval: float,
    seconds: float,
    name: str,
) -> None:
    db_url = svc.mysql_url(cluster.extra["database"])  # type: ignore[attr-defined]
    users = seeder.users(clients, prefix="l")
    groups = [users[i : i + room_size] for i in range(0, clients, room_size)]
    rooms = seeder.rooms(groups, name="load")

    async def scenario() -> None:
        http = async_http()
        peers: list[Peer] = []
        senders: list[tuple[Peer, str]] = []
        for room in rooms:
            for j, user in enumerate(room.members):
                p = Peer(
                    user,
                    lambda: stack.gateway_urls,
                    stack.history_url,
                    [room.id],
                    http,
                    start=len(peers),
                )
                p.record_latency = True
                peers.append(p)
                if j < senders_per_room:
                    senders.append((p, room.id))
        t0 = now()
        for i in range(0, len(peers), 50):  # ramp up by fifties
            for p in peers[i : i + 50]:
                p.start()
            await wait_until(
                lambda i=i: all(p.synced.is_set() for p in peers[: i + 50]), 60, "clients connected"
            )
        t_connected = now()
        ledger = Ledger(name)
        traffic = Traffic(ledger, senders, interval=interval, answer_timeout=15)
        try:
            traffic.start()
            t_start = now()
            await wait_until(lambda: now() - t_start >= seconds, seconds + 5, "the load period")
            await traffic.stop()
            t_stopped = now()
            acked = ledger.acked
            by_room: dict[str, list[str]] = {}
            sender_of: dict[str, str] = {}
            for op in acked:
                assert op.acked is not None
                by_room.setdefault(op.room, []).append(op.acked["id"])
                sender_of[op.acked["id"]] = op.sender_id
            expected = sum(
                len(by_room.get(p.rooms[0], []))
                - sum(1 for m in by_room.get(p.rooms[0], []) if sender_of[m] == p.user.id)
                for p in peers
            )

            def missing() -> list[str]:
                out = []
                for p in peers:
                    want = {m for m in by_room.get(p.rooms[0], []) if sender_of[m] != p.user.id}
                    lacking = want - p.view(p.rooms[0])
                    if lacking:
                        out.append(f"{p.user.username}: {len(lacking)}")
                return out

            try:
                await wait_until(lambda: not missing(), 30, "every delivery")
            except AssertionError:
                pass
            t_delivered = now()
            received = sum(p.live for p in peers)
            lost = missing()
            verdict, drained = await asyncio.to_thread(
                wait_verified, ledger, db_url, [r.id for r in rooms], 60
            )
            lat = sorted(x for p in peers for x in p.latencies_ms)
            acks = sorted(a.latency for a in ledger.answers if a.kind == "ack")
            figures = {
                "clients": len(peers),
                "gateways": len(stack.gateway_urls),
                "rooms": len(rooms),
                "senders": len(senders),
                "connect_all_s": round(t_connected - t0, 2),
                "load_s": round(t_stopped - t_start, 2),
                "messages_acked": len(acked),
                "msgs_per_s": round(len(acked) / (t_stopped - t_start), 1),
                "deliveries_expected": expected,
                "deliveries_received": received,
                "deliveries_per_s": round(received / (t_delivered - t_start), 1),
                "duplicate_deliveries": sum(p.live_dups for p in peers),
                "clients_missing_messages": len(lost),
                "reconnects": sum(p.conns - 1 for p in peers),
                "ack_p50_ms": round(statistics.median(acks) * 1000, 1) if acks else None,
                "ack_p99_ms": round(acks[int(len(acks) * 0.99) - 1] * 1000, 1) if acks else None,
                "delivery_p50_ms": lat[len(lat) // 2] if lat else None,
                "delivery_p99_ms": lat[int(len(lat) * 0.99) - 1] if lat else None,
                **{k: verdict.figures[k] for k in ("persisted", "duplicates", "acked_missing")},
                "history_drain_s": round(drained, 2),
                "answers": ledger.figures()["answers"],
            }
            report(name, figures)
            problems = list(verdict.problems)
            if lost:
                problems.append(f"{len(lost)} clients miss live messages: {lost[:5]}")
            if received != expected:
                problems.append(f"{received} deliveries for {expected} expected")
            if figures["duplicate_deliveries"]:
                problems.append(f"{figures['duplicate_deliveries']} duplicate deliveries")
            if figures["reconnects"]:
                problems.append(f"{figures['reconnects']} connections dropped under load")
            if set(ledger.figures()["answers"]) != {"ack"}:
                problems.append(f"not every send was simply acked: {ledger.figures()['answers']}")
            assert not problems, problems
        finally:
            await asyncio.gather(*(p.stop() for p in peers), return_exceptions=True)
            await http.aclose()

    asyncio.run(scenario())


def test_load_300_clients_every_message_to_every_member(
    scaled: Stack, cluster: Cluster, shared_seeder: Seeder
) -> None:
    run_load(
        scaled,
        cluster,
        shared_seeder,
        clients=300,
        room_size=10,
        senders_per_room=3,
        interval=0.6,
        seconds=10,
        name="7 load 300 clients",
    )


@pytest.mark.chaos
def test_soak_load_many_clients(scaled: Stack, cluster: Cluster, shared_seeder: Seeder) -> None:
    n = int(os.environ.get("CHAT_SOAK_CLIENTS", "900"))
    run_load(
        scaled,
        cluster,
        shared_seeder,
        clients=n,
        room_size=15,
        senders_per_room=3,
        interval=1.0,
        seconds=float(os.environ.get("CHAT_SOAK_SECONDS", "60")),
        name=f"7 load {n} clients (soak)",
    )
