"""History shards in the scaled mode (issue 14): 4 shards and 2 writer processes share them;
every acked message is in history once and in per-room order; kill -9 of one writer moves its
shards to the other within seconds, with nothing lost. Real RabbitMQ, MariaDB, gunicorn and
uvicorn processes (a cluster of its own: own vhost and database on the local servers)."""

from __future__ import annotations

import asyncio
import signal
import time

import httpx
import pytest

from tests.faults.scene import finish, open_scene
from tests.faults.traffic import wait_until
from tools.cluster import Cluster, Proc
from tools.seed import Seeder

pytestmark = pytest.mark.scaled
SHARDS = 4


def held(proc: Proc) -> int:
    """Shards a history process consumes (its metric); -1 when it does not answer."""
    try:
        text = httpx.get(proc.url + "/metrics", timeout=3).text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith("chat_history_shards_held "):
            return int(float(line.split()[1]))
    return -1


def test_two_writers_share_four_shards_and_one_takes_over_after_a_kill(
    sharded_cluster: Cluster,
) -> None:
    c = sharded_cluster
    first, second = c.history_procs
    db_url = c.database_url

    async def scenario() -> dict[str, float]:
        await wait_until(
            lambda: held(first) == 2 and held(second) == 2,
            30,
            "2 shards each",
            detail=lambda: (held(first), held(second)),
        )
        seeder = Seeder(db_url, c.secret)
        try:
            scene = await open_scene(
                "shards",
                seeder,
                lambda: [g.url for g in c.gateway_procs],
                second.url,
                rooms=8,
                members=3,
                senders_per_room=2,
                interval=0.02,
            )
        finally:
            seeder.close()
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 300, 60, "traffic flowing")
            t_kill = time.monotonic()
            first.signal(signal.SIGKILL)
            assert first.popen is not None
            await asyncio.to_thread(first.popen.wait, 10)
            t_taken = await wait_until(lambda: held(second) == SHARDS, 30, "all 4 shards taken")
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 300, 60, "traffic after")
            verdict, _drained, gaps = await finish(scene, db_url)
            assert not verdict.problems and not gaps, (verdict.problems, gaps[:3])
            # per-room order: each sender's messages are stored in the order they were sent
            by_sender: dict[str, list[tuple[str, str, int]]] = {}
            for row in verdict.rows.values():
                by_sender.setdefault(row["sender_id"], []).append(
                    (row["sent_at"], row["id"], int(row["client_msg_id"].rsplit("-", 1)[1]))
                )
            for sender, rows in by_sender.items():
                seqs = [seq for _, _, seq in sorted(rows)]
                assert seqs == sorted(seqs), f"{sender}: stored out of send order"
            return {"takeover_s": t_taken - t_kill, "acked": float(len(scene.ledger.acked))}
        finally:
            await scene.close()

    figures = asyncio.run(scenario())
    print("shards figures", figures)
