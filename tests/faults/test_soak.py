"""The chaos soak (``make chaos``, CHAT_CHAOS=1): long runs of the fault scenarios.

- random faults under steady load for CHAT_SOAK_SECONDS (default 180): kill -9 of a gateway, of
  the history writer, of the broker; the broker frozen; MariaDB stopped. After each fault the
  system must recover by itself (every service ready, every client connected and re-synced,
  acks flowing); at the end the ledger must match MySQL and every client's view must equal
  history;
- the broker frozen (SIGSTOP) with the services' DEFAULT heartbeat (10 s, no ?heartbeat= in the
  URL): detection time measured against "about two heartbeats".

The MariaDB 30 s outage and the 900-client load are in test_database.py / test_load.py, the
one-gateway partition in test_partition.py (all marked chaos).
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import tempfile
import time
from pathlib import Path

import pytest

from tests.conftest import FAST_ENV
from tests.faults.conftest import FaultEnv
from tests.faults.report import report
from tests.faults.scene import finish, now, open_scene, since, summary
from tests.faults.seed import Seeder
from tests.faults.traffic import ReadyMonitor, wait_until
from tools.cluster import Cluster

pytestmark = pytest.mark.chaos

FAULTS = ("gateway", "writer", "broker", "freeze", "database")


async def recovered(env: FaultEnv, scene, monitor: ReadyMonitor, since_t: float) -> float:  # type: ignore[no-untyped-def]
    await monitor.wait_all(True, 90)
    await wait_until(
        lambda: all(p.connected.is_set() and p.synced.is_set() for p in scene.peers),
        60,
        "every client connected and synced",
        detail=lambda: [p.events[-2:] for p in scene.peers if not p.synced.is_set()][:3],
    )
    acked = len(scene.ledger.acked)
    await wait_until(lambda: len(scene.ledger.acked) >= acked + 50, 60, "acks flowing again")
    return now() - since_t


async def inject(env: FaultEnv, fault: str) -> float:
    """Apply one fault and undo it; the time it lasted."""
    t0 = now()
    if fault == "gateway":
        victim = random.choice(env.cluster.gateway_procs)
        victim.signal(signal.SIGKILL)
        await asyncio.sleep(2)
        await asyncio.to_thread(victim.restart)
    elif fault == "writer":
        env.cluster.history.signal(signal.SIGKILL)
        await asyncio.sleep(2)
        await asyncio.to_thread(env.cluster.history.restart)
    elif fault == "broker":
        env.rabbit.kill9()
        await asyncio.sleep(2)
        await asyncio.to_thread(env.rabbit.start)
    elif fault == "freeze":
        env.rabbit.pause()
        await asyncio.sleep(3 * env.heartbeat + 6)
        env.rabbit.resume()
    elif fault == "database":
        await asyncio.to_thread(env.mariadb.stop)
        await asyncio.sleep(10)
        await asyncio.to_thread(env.mariadb.start)
    return now() - t0


def test_soak_random_faults_under_load(faults: FaultEnv) -> None:
    env = faults
    seconds = float(os.environ.get("CHAT_SOAK_SECONDS", "180"))
    rng_seed = int(os.environ.get("CHAT_SOAK_SEED", str(int(time.time()))))
    random.seed(rng_seed)

    async def scenario() -> None:
        scene = await open_scene(
            "soak",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            env.cluster.history.url,
            rooms=6,
            members=8,
            senders_per_room=3,
            interval=0.05,
        )
        monitor = ReadyMonitor(env.services())
        monitor.start()
        log: list[dict[str, object]] = []
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 100, 30, "traffic flowing")
            t_end = now() + seconds
            order = list(FAULTS)
            while now() < t_end:
                if not order:
                    order = list(FAULTS)
                    random.shuffle(order)
                fault = order.pop(0)
                t0 = now()
                lasted = await inject(env, fault)
                took = await recovered(env, scene, monitor, t0 + lasted)
                log.append(
                    {"fault": fault, "lasted_s": round(lasted, 1), "recovered_s": round(took, 1)}
                )
                print(f"[soak] {fault}: lasted {lasted:.1f}s, recovered {took:.1f}s after")
            verdict, drained, gaps = await finish(scene, env.database_url, drain_timeout=120)
            figures = {
                **summary(scene),
                **verdict.figures,
                "seed": rng_seed,
                "faults": log,
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
            }
            report("soak: random faults under load", figures)
            failures = [*verdict.problems, *gaps]
            if scene.ledger.figures()["answers"].get("timeout"):
                failures.append(f"sends left hanging: {scene.ledger.figures()['answers']}")
            assert not failures, failures
        finally:
            await monitor.stop()
            await scene.close()

    asyncio.run(scenario())


def test_soak_sigstop_with_the_default_heartbeat(faults: FaultEnv) -> None:
    """A second cluster on the same private broker and MariaDB, with the services' default
    heartbeat (10 s): frozen until detected (bounded), then resumed."""
    env = faults
    db_url = env.mariadb.create_database("chat_default_hb")
    state = Path(tempfile.mkdtemp(prefix="chat-faults-hb-"))
    cluster = Cluster(
        database_url=db_url,
        broker_url=env.rabbit.url(env.rabbit.add_vhost(f"hb{os.getpid()}")),
        gateways=2,
        port=None,
        state=state,
        extra_env={**FAST_ENV, "CHAT_SEND_RATE": "500", "CHAT_SEND_BURST": "500"},
        secret=env.cluster.secret,
    )
    cluster.start()
    seeder = Seeder(db_url, cluster.secret)
    hb = 10

    async def scenario() -> None:
        scene = await open_scene(
            "sigstop-default-heartbeat",
            seeder,
            lambda: [g.url for g in cluster.gateway_procs],
            cluster.history.url,
            rooms=2,
            members=4,
            senders_per_room=2,
        )
        monitor = ReadyMonitor({p.name: p.url for p in cluster.procs if p.name != "auth"})
        monitor.start()
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 50, 30, "traffic flowing")
            t_stop = now()
            env.rabbit.pause()
            bound = 2 * hb + hb / 2 + 3
            try:
                await monitor.wait_all(False, 3 * (hb + 1) + hb + 10)
            except AssertionError:
                pass
            detect = {n: since(t_stop, monitor.first(n, False, t_stop)) for n in monitor.services}
            t_cont = now()
            env.rabbit.resume()
            await monitor.wait_all(True, 60)
            t_ready = now()
            verdict, _drained, gaps = await finish(scene, db_url)
            figures = {
                **summary(scene),
                **verdict.figures,
                "heartbeat_s": hb,
                "frozen_s": since(t_stop, t_cont),
                "detected_s": detect,
                "detection_bound_s": bound,
                "ready_after_sigcont_s": since(t_cont, t_ready),
                "gaps": len(gaps),
            }
            report("2 broker SIGSTOP, default heartbeat (soak)", figures)
            failures = [*verdict.problems, *gaps]
            if scene.ledger.figures()["answers"].get("timeout"):
                failures.append(f"sends left hanging: {scene.ledger.figures()['answers']}")
            late = {n: t for n, t in detect.items() if t is None or t > bound}
            if late:
                failures.append(f"not detected within about two heartbeats ({bound}s): {detect}")
            assert not failures, failures
        finally:
            env.rabbit.resume()
            await monitor.stop()
            await scene.close()

    try:
        asyncio.run(scenario())
    finally:
        seeder.close()
        cluster.stop()
        shutil.rmtree(state, ignore_errors=True)
