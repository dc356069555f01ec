"""Scenario 4: the (private) MariaDB stopped under load, then started again.

Pass criteria: sends are still acked while the database is down (the gateway's hot path has no
query; messages wait in the durable history queue); the history API answers 503 JSON, not a 500;
once MariaDB is back the backlog drains by itself; every acked message is stored once.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.faults.conftest import FaultEnv
from tests.faults.ledger import wait_present
from tests.faults.report import report
from tests.faults.scene import finish, now, open_scene, since, summary
from tests.faults.traffic import ReadyMonitor, wait_until
from tests.support.client import PASSWORD


def run_outage(env: FaultEnv, outage: float, *, rooms: int, senders: int, name: str) -> None:
    async def scenario() -> None:
        scene = await open_scene(
            f"db-outage-{int(outage)}s",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            env.cluster.history.url,
            rooms=rooms,
            members=5,
            senders_per_room=senders,
            interval=0.02,
        )
        monitor = ReadyMonitor(env.services())
        monitor.start()
        failures: list[str] = []
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 200, 30, "traffic flowing")
            t_stop = now()
            await asyncio.to_thread(env.mariadb.stop)
            acked_at_stop = len(scene.ledger.acked)
            await monitor.wait_all(False, 15, ["history"])
            # the API answers, with a clear error
            user = scene.peers[0].user
            r = await scene.http.get(
                f"{env.cluster.history.url}/api/history/{scene.rooms[0].id}", headers=user.headers
            )
            history_status = (r.status_code, r.json().get("error", {}).get("code"))
            r = await scene.http.post(
                f"{env.cluster.auth.url}/api/auth/login",
                json={"username": user.username, "password": PASSWORD},
            )
            login_status = r.status_code
            login_json = r.headers.get("content-type", "").startswith("application/json")
            # the outage lasts `outage` seconds (the fault itself, not a wait for luck)
            await wait_until(lambda: now() - t_stop >= outage, outage + 5, "the outage")
            acked_during = len(scene.ledger.acked) - acked_at_stop
            pending_ids = [op.acked["id"] for op in scene.ledger.acked]  # type: ignore[index]
            t_start = now()
            boot = await asyncio.to_thread(env.mariadb.start)
            t_up = now()
            drained = await asyncio.to_thread(wait_present, env.database_url, pending_ids, 90)
            t_ready = await monitor.wait_all(True, 60)
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 100, 30, "traffic after")
            verdict, _final_drain, gaps = await finish(scene, env.database_url)
            figures = {
                **summary(scene),
                **verdict.figures,
                "db_down_s": since(t_stop, t_start),
                "db_boot_s": round(boot, 2),
                "acked_while_db_down": acked_during,
                "backlog_at_restart": len(pending_ids),
                "backlog_drained_after_db_up_s": None if drained is None else round(drained, 2),
                "services_ready_after_db_up_s": since(t_up, t_ready),
                "history_api_while_down": list(history_status),
                "login_while_down": login_status,
                "gaps": len(gaps),
            }
            report(name, figures)
            failures += verdict.problems + gaps
            if acked_during < 50:
                failures.append(f"only {acked_during} sends acked while the database was down")
            if history_status != (503, "unavailable"):
                failures.append(f"history API while the database is down: {history_status}")
            if login_status not in (503,) or not login_json:
                failures.append(f"login while the database is down: {login_status} (want 503 JSON)")
            if drained is None:
                failures.append("the backlog did not drain within 90 s of the database's return")
            answers = scene.ledger.figures()["answers"]
            if answers.get("timeout"):
                failures.append(f"sends left hanging: {answers}")
            assert not failures, failures
        finally:
            await monitor.stop()
            await scene.close()

    asyncio.run(scenario())


def test_mariadb_stopped_under_load_no_loss(faults: FaultEnv) -> None:
    run_outage(faults, 8.0, rooms=3, senders=2, name="4 MariaDB stopped 8 s")


@pytest.mark.chaos
def test_soak_mariadb_stopped_30s(faults: FaultEnv) -> None:
    run_outage(faults, 30.0, rooms=6, senders=3, name="4 MariaDB stopped 30 s (soak)")
