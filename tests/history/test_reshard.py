"""Changing the number of history shards of a running cluster (python -m services reshard):
drain, switch, resume while clients send. Nothing acked is lost, nothing is doubled; sends
during the pause are answered ``unavailable`` and go through on their retry; afterwards
messages route by the new count (2 -> 4 -> 1 here: a shard added and shards removed)."""

from __future__ import annotations

import asyncio

import pytest

from services.common import topology
from services.common.settings import load_settings
from services.history.reshard import Resharder
from tests.faults.scene import finish, open_scene
from tests.faults.traffic import wait_until
from tools.cluster import Cluster
from tools.seed import Seeder

pytestmark = pytest.mark.scaled


@pytest.mark.parametrize("sharded_cluster", [{"shards": 2, "writers": 2}], indirect=True)
def test_reshard_under_traffic_loses_and_doubles_nothing(sharded_cluster: Cluster) -> None:
    c = sharded_cluster
    env = c.env()
    settings = load_settings(env)

    async def scenario() -> None:
        seeder = Seeder(c.database_url, c.secret)
        try:
            scene = await open_scene(
                "reshard",
                seeder,
                lambda: [g.url for g in c.gateway_procs],
                c.history.url,
                rooms=8,
                members=3,
                senders_per_room=2,
                interval=0.02,
            )
        finally:
            seeder.close()
        try:
            scene.traffic.start()
            for shards in (4, 1):
                acked = len(scene.ledger.acked)
                await wait_until(lambda a=acked: len(scene.ledger.acked) >= a + 200, 60, "flowing")
                async with Resharder(settings) as r:
                    cfg = await r.reshard(shards)
                    assert (cfg.shards, cfg.paused) == (shards, False)
                    for k in range(shards):  # the new count's queues exist...
                        await r.bus.queue_depth(topology.history_queue(k))
                    gone = 4 if shards == 1 else None
                    if gone:  # ...and the removed ones do not
                        with pytest.raises(Exception):  # noqa: B017 (any broker refusal)
                            await r.bus.queue_depth(topology.history_queue(gone - 1))
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 200, 60, "traffic after")
            verdict, _drained, gaps = await finish(scene, c.database_url)
            assert not verdict.problems and not gaps, (verdict.problems, gaps[:3])
            answers = scene.ledger.figures()["answers"]
            assert answers.get("unavailable", 0) > 0, answers  # the pauses were real
            print("reshard figures", verdict.figures, answers)
        finally:
            await scene.close()

    asyncio.run(scenario())
