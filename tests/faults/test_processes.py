"""Scenarios 3 and 5: kill -9 of the history writer mid-batch, and of a gateway, under load.

(tests/history/test_writer_real.py kills writer processes fed straight from the bus; this one
kills the writer of a whole cluster while real clients send through the gateways, and checks
what the clients were promised and what they see.)
"""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.conftest import FAST_ENV
from tests.faults.conftest import FaultEnv
from tests.faults.peer import Peer
from tests.faults.report import report
from tests.faults.scene import finish, now, open_scene, since, summary
from tests.faults.traffic import wait_until

PRESENCE_TIMEOUT = float(FAST_ENV["CHAT_PRESENCE_TIMEOUT"])
PRESENCE_HEARTBEAT = float(FAST_ENV["CHAT_PRESENCE_HEARTBEAT"])


def metric(url: str, name: str) -> float:
    text = httpx.get(url + "/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def test_kill_9_history_writer_mid_batch_then_restart(faults: FaultEnv) -> None:
    env = faults
    writer = env.cluster.history

    async def scenario() -> None:
        scene = await open_scene(
            "writer-kill",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            writer.url,
            rooms=4,
            members=5,
            senders_per_room=3,
            spare_per_room=1,
            interval=0.01,
        )
        failures: list[str] = []
        late: Peer | None = None
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 300, 30, "traffic flowing")
            t_kill = now()
            writer.signal(signal.SIGKILL)
            assert writer.popen is not None
            await asyncio.to_thread(writer.popen.wait, 10)
            acked_at_kill = len(scene.ledger.acked)
            # sends are still acked: the broker holds them in the durable history queue
            await wait_until(
                lambda: len(scene.ledger.acked) >= acked_at_kill + 200, 20, "acks without a writer"
            )
            # a client connecting now cannot be told `synced` until the writer is back
            late = Peer(
                scene.spare[0],
                lambda: [g.url for g in env.cluster.gateway_procs],
                writer.url,
                [scene.rooms[0].id],
                scene.http,
                start=2,
            )
            late.start()
            await wait_until(late.connected.is_set, 15, "a client connects without a writer")
            t_restart = now()
            await asyncio.to_thread(writer.restart)
            t_up = now()
            await wait_until(late.synced.is_set, 30, "synced once the writer is back")
            synced_after = late.event_times("synced")[0]
            # the new writer answers markers while it starts (before /readyz says so): the
            # invariant is that no `synced` came while no writer ran
            if synced_after < t_restart:
                failures.append("`synced` came while the writer was down")
            redelivered = await asyncio.to_thread(
                metric, writer.url, "chat_history_redelivered_total"
            )
            scene.peers.append(late)
            verdict, drained, gaps = await finish(scene, env.database_url)
            figures = {
                **summary(scene),
                **verdict.figures,
                "writer_down_s": since(t_kill, t_restart),
                "writer_ready_after_restart_s": since(t_restart, t_up),
                "redelivered_after_restart": redelivered,
                "late_client_synced_after_restart_s": since(t_up, synced_after),
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
            }
            report("3 history writer kill -9", figures)
            failures += verdict.problems + gaps
            if redelivered < 1:
                failures.append("nothing was redelivered: the kill did not land mid-batch")
            answers = scene.ledger.figures()["answers"]
            if answers.get("timeout") or set(answers) - {"ack"}:
                failures.append(f"sends were not all acked while the writer was down: {answers}")
            assert not failures, failures
        finally:
            await scene.close()

    asyncio.run(scenario())


def test_kill_9_gateway_clients_resume_elsewhere_presence_clears(faults: FaultEnv) -> None:
    env = faults
    victim = env.cluster.gateway_procs[1]

    async def scenario() -> None:
        scene = await open_scene(
            "gateway-kill",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            env.cluster.history.url,
            rooms=4,
            members=9,
            senders_per_room=3,
        )
        failures: list[str] = []
        try:
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 200, 30, "traffic flowing")
            on_victim = scene.peers_on(victim.url)
            assert len(on_victim) >= 6, "the scene spreads clients over every gateway"
            # a third of the victim's users stay away: their presence must clear everywhere
            away = on_victim[::3]
            for p in away:
                p.hold()
            back = [p for p in on_victim if p not in away]
            observers = [
                p
                for p in scene.peers
                if p not in on_victim and any(set(p.rooms) & set(a.rooms) for a in away)
            ]
            t_kill = now()
            victim.signal(signal.SIGKILL)
            await wait_until(
                lambda: all(p.event_times("synced", t_kill) for p in back),
                30,
                "the killed gateway's clients reconnect elsewhere and re-sync",
                detail=lambda: [p.events[-3:] for p in back if not p.event_times("synced", t_kill)][
                    :3
                ],
            )
            t_resumed = now()
            await wait_until(
                lambda: all(p.current_gateway != victim.url for p in back), 1, "elsewhere"
            )
            away_names = {p.user.username for p in away}

            def cleared() -> bool:
                for o in observers:
                    seen_off = {u for t, u, online in o.presence if not online and t >= t_kill}
                    mine = {a.user.username for a in away if set(a.rooms) & set(o.rooms)}
                    if not mine <= seen_off:
                        return False
                return True

            bound = PRESENCE_TIMEOUT + PRESENCE_HEARTBEAT + 3
            try:
                t_cleared: float | None = await wait_until(cleared, bound + 10, "presence cleared")
            except AssertionError:
                t_cleared = None
            # every surviving gateway agrees: away users offline, reconnected ones online
            wrong = []
            names = sorted(away_names | {p.user.username for p in back})
            for g in env.cluster.gateway_procs:
                if g is victim:
                    continue
                r = await scene.http.get(
                    g.url + "/api/presence",
                    params={"users": ",".join(names)},
                    headers=scene.peers[0].user.headers,
                )
                online = set(r.json()["online"])
                wrong += [f"{n} online@{g.name}" for n in away_names & online]
                wrong += [f"{n} offline@{g.name}" for n in set(names) - away_names - online]
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 100, 30, "traffic after")
            live_scene = [p for p in scene.peers if p not in away]
            scene_peers, scene.peers = scene.peers, live_scene
            verdict, drained, gaps = await finish(scene, env.database_url)
            scene.peers = scene_peers
            figures = {
                **summary(scene),
                **verdict.figures,
                "clients_on_killed_gateway": len(on_victim),
                "reconnected": len(back),
                "stayed_away": len(away),
                "all_resumed_s": since(t_kill, t_resumed),
                "presence_cleared_s": since(t_kill, t_cleared),
                "presence_bound_s": bound,
                "presence_disagreements": len(wrong),
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
            }
            report("5 gateway kill -9", figures)
            failures += verdict.problems + gaps
            if t_cleared is None or t_cleared - t_kill > bound:
                failures.append(f"presence of the killed gateway's users not cleared in {bound}s")
            if wrong:
                failures.append(f"presence disagrees with reality: {wrong[:5]}")
            if scene.ledger.figures()["answers"].get("timeout"):
                failures.append(f"sends left hanging: {scene.ledger.figures()['answers']}")
            assert not failures, failures
        finally:
            await scene.close()

    asyncio.run(scenario())
