"""The scaled stack on a private 3-node RabbitMQ cluster (issue 14): 4 history shards with
their leaders spread over the nodes, 2 gateways and 2 writers connected to different nodes.
Under load, the node leading a shard is killed with -9, then started again: every acked
message is in history once, the clients of a gateway that lost its node are told to resync
and resume, and every process recovers by itself (it reconnects to another node)."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from services.common import topology
from tests.conftest import FAST_ENV
from tests.faults.report import report
from tests.faults.scene import finish, open_scene, summary
from tests.faults.traffic import wait_until
from tests.support import services as svc
from tests.support.private_rabbit_cluster import PrivateRabbitCluster
from tools.cluster import Cluster
from tools.seed import Seeder

pytestmark = pytest.mark.scaled
SHARDS = 4


@pytest.fixture
def stack_on_cluster(rabbit_cluster: PrivateRabbitCluster) -> Iterator[Cluster]:
    db = svc.create_database("chat_test_rcluster")
    state = Path(tempfile.mkdtemp(prefix="chat-rcluster-"))
    c = Cluster(
        database_url=svc.mysql_url(db),
        broker_url=",".join(rabbit_cluster.urls(heartbeat=2)),
        gateways=2,
        writers=2,
        state=state,
        extra_env={**FAST_ENV, "CHAT_HISTORY_SHARDS": str(SHARDS)},
    )
    try:
        try:
            c.start()
        except Exception:
            for log in sorted((state / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
        yield c
    finally:
        c.stop()
        svc.drop_database(db)
        shutil.rmtree(state, ignore_errors=True)


def ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_kill_9_of_a_shard_leader_node_under_load_then_restart(
    rabbit_cluster: PrivateRabbitCluster, stack_on_cluster: Cluster
) -> None:
    rc, c = rabbit_cluster, stack_on_cluster
    shards = {topology.history_queue(k) for k in range(SHARDS)}

    async def scenario() -> None:
        leaders = await asyncio.to_thread(
            wait_until_leaders, rc, shards
        )  # spread: balanced placement, declared by processes on different nodes
        spread = {rc.index(n) for n in leaders.values()}
        seeder = Seeder(c.database_url, c.secret)
        try:
            scene = await open_scene(
                "rabbit-cluster",
                seeder,
                lambda: [g.url for g in c.gateway_procs],
                c.history.url,
                rooms=8,
                members=3,
                senders_per_room=2,
                interval=0.03,
                answer_timeout=15.0,
            )
        finally:
            seeder.close()
        failures: list[str] = []
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 300, 60, "traffic flowing")
            # a node that leads a shard and has a gateway on it (tools.cluster: gateway i starts
            # on node (i + 1) mod 3, writer i on node i mod 3)
            led = {i: sum(1 for n in leaders.values() if rc.index(n) == i) for i in range(len(rc))}
            gateway_nodes = [(i + 1) % len(rc) for i in range(1, len(c.gateway_procs) + 1)]
            victim = max(gateway_nodes, key=lambda i: led[i])
            assert led[victim] >= 1, (leaders, gateway_nodes)
            t_kill = time.monotonic()
            await asyncio.to_thread(rc.kill9, victim)
            acked = len(scene.ledger.acked)
            await wait_until(
                lambda: len(scene.ledger.acked) >= acked + 200, 90, "acks with a node down"
            )
            t_flowing = time.monotonic()
            await asyncio.to_thread(rc.start_node, victim)
            t_back = time.monotonic()
            await wait_until(lambda: all(ready(p.url) for p in c.procs), 60, "every service ready")
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 200, 60, "traffic after")
            resynced = [p for p in scene.peers if p.event_times("resync", t_kill)]
            unsynced = [p for p in resynced if not p.event_times("synced", t_kill)]
            verdict, drained, gaps = await finish(scene, c.database_url, drain_timeout=120)
            figures = {
                **summary(scene),
                **verdict.figures,
                "shard_leaders_on_nodes": len(spread),
                "killed_node": victim,
                "killed_node_led": sum(1 for n in leaders.values() if rc.index(n) == victim),
                "flowing_again_s": round(t_flowing - t_kill, 2),
                "node_restart_s": round(t_back - t_flowing, 2),
                "clients_resynced": len(resynced),
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
            }
            report("14 RabbitMQ cluster: kill -9 of a shard leader's node", figures)
            failures += verdict.problems + gaps
            if len(spread) < 2:
                failures.append(f"shard leaders not spread: {leaders}")
            if unsynced:
                failures.append(f"{len(unsynced)} clients told to resync never got synced")
            if not resynced:
                failures.append("no client was told to resync: the gateway kept its node?")
            if scene.ledger.figures()["answers"].get("timeout"):
                failures.append(f"sends left hanging: {scene.ledger.figures()['answers']}")
            if gaps:  # what was missed, and what the client saw around it
                ids = {
                    i
                    for g in gaps
                    for i in g.split(": ", 1)[1].strip("[]").replace("'", "").split(", ")
                }
                ops = [op for op in scene.ledger.ops.values() if op.acked and op.acked["id"] in ids]
                for op in ops[:4]:
                    print(
                        "MISSED",
                        op.acked["id"],
                        op.acked["sent_at"],
                        [(round(t - t_kill, 3), w) for t, w in op.trail],
                    )
                for p in resynced[:3]:
                    print(
                        "PEER",
                        p.user.username,
                        p.current_gateway,
                        [(round(t - t_kill, 3), e) for t, e in p.events if t >= t_kill - 1],
                    )
            assert not failures, failures
        finally:
            await scene.close()

    asyncio.run(scenario())


def wait_until_leaders(rc: PrivateRabbitCluster, queues: set[str]) -> dict[str, str]:
    deadline = time.monotonic() + 60
    while True:
        leaders = {q: n for q, n in rc.leaders().items() if q in queues and n}
        if set(leaders) == queues:
            return leaders
        assert time.monotonic() < deadline, f"no leader for every shard: {leaders}"
        time.sleep(0.25)
