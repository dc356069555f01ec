"""A reconnect storm (issue 13): 1,000 clients on one gateway, which is killed with -9 while
messages flow; every client reconnects to the others at once, is told ``synced`` and misses
nothing (acked ⊆ history, no duplicate, every client's view equals history).

Part of ``make chaos`` (it takes 3-6 minutes here: 1,000 clients in one test process on the
same two cores as the cluster), not of ``make test``.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.faults.conftest import FaultEnv
from tests.faults.report import report
from tests.faults.scene import finish, now, open_scene, since, summary
from tests.faults.traffic import wait_until

CLIENTS = 1000
ROOMS = 50


@pytest.mark.chaos
def test_reconnect_storm_of_1000_clients_after_a_gateway_is_killed(faults: FaultEnv) -> None:
    env = faults
    victim = env.cluster.gateway_procs[0]
    others = [g for g in env.cluster.gateway_procs if g is not victim]

    def gateways() -> list[str]:  # everyone starts on the victim; after it dies, the others
        alive = [g.url for g in others if g.alive()]
        return ([victim.url] if victim.alive() else []) + alive

    async def scenario() -> None:
        t_open = now()
        scene = await open_scene(
            "storm",
            env.seeder,
            gateways,
            env.cluster.history.url,
            rooms=ROOMS,
            members=CLIENTS // ROOMS,
            senders_per_room=1,
            interval=5.0,  # 10 messages a second in all: the storm is the load here
            batch=100,  # the clients arrive a hundred at a time; they leave all at once
            ready_timeout=60.0,  # a patient client: a storm is slow, a retry makes it slower
            spread=False,  # every client on the gateway that is killed
        )
        failures: list[str] = []
        try:
            on_victim = scene.peers_on(victim.url)
            t_connected = now()
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 30, 30, "traffic flowing")
            t_kill = now()
            victim.signal(signal.SIGKILL)
            await wait_until(
                lambda: all(p.event_times("synced", t_kill) for p in on_victim),
                120,
                "every client of the killed gateway reconnected and synced",
                detail=lambda: [
                    p.events[-2:] for p in on_victim if not p.event_times("synced", t_kill)
                ][:3],
            )
            t_settled = now()
            acked = len(scene.ledger.acked)
            await wait_until(
                lambda: len(scene.ledger.acked) >= acked + 30,
                60,
                "traffic after",
                detail=lambda: (
                    scene.ledger.figures(),
                    [(round(a.at - t_kill, 1), a.kind) for a in scene.ledger.answers[-8:]],
                    [p.events[-3:] for p in on_victim[:3]],
                ),
            )
            verdict, drained, gaps = await finish(scene, env.database_url, drain_timeout=120)
            figures = {
                **summary(scene),
                **verdict.figures,
                "clients_on_killed_gateway": len(on_victim),
                "connect_all_s": since(t_open, t_connected),
                "storm_settled_s": since(t_kill, t_settled),
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
            }
            report("13 reconnect storm", figures)
            failures += verdict.problems + gaps
            if len(on_victim) < CLIENTS * 0.9:
                failures.append(f"only {len(on_victim)} clients were on the killed gateway")
            if scene.ledger.figures()["answers"].get("timeout"):
                failures.append(f"sends left hanging: {scene.ledger.figures()['answers']}")
            for problem in failures[:10]:  # pytest cuts a long assertion message
                print("STORM", problem)
            assert not failures, failures
        finally:
            await scene.close()
            if not victim.alive():
                await asyncio.to_thread(victim.restart)

    asyncio.run(scenario())
