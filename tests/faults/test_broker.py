"""Scenarios 1 and 2: the (private) RabbitMQ node killed with -9 and restarted, or frozen with
SIGSTOP, under load.

Pass criteria: every acked message is in history once (ledger vs MySQL); no duplicates; every
service becomes ready again by itself; every client is told ``resync`` and then ``synced`` and,
following the resume rule, ends with no gap; a send during the outage is answered (an
``unavailable`` error), never left hanging.
"""

from __future__ import annotations

import asyncio
import signal

from tests.conftest import FAST_ENV
from tests.faults.conftest import FaultEnv
from tests.faults.ledger import wait_verified
from tests.faults.peer import Peer
from tests.faults.report import report
from tests.faults.scene import Scene, finish, now, open_scene, since, summary
from tests.faults.traffic import ReadyMonitor, wait_until

ANSWER_BOUND = 8.0  # a send is answered within the publish timeout (5 s) and some slack


PRESENCE_TIMEOUT = float(FAST_ENV["CHAT_PRESENCE_TIMEOUT"])


async def offline_somewhere(env: FaultEnv, scene: Scene) -> list[str]:
    """Connected users that some gateway's GET /api/presence says are offline."""
    names = sorted({p.user.username for p in scene.peers if p.connected.is_set()})
    out: list[str] = []
    token = scene.peers[0].user.headers
    for g in env.cluster.gateway_procs:
        r = await scene.http.get(
            g.url + "/api/presence", params={"users": ",".join(names)}, headers=token
        )
        assert r.status_code == 200, r.text
        online = set(r.json()["online"])
        out += [f"{n}@{g.name}" for n in names if n not in online]
    return out


async def dead_gateway_expiry(env: FaultEnv, scene: Scene) -> float | None:
    """Seconds until a client sees the users of a freshly killed gateway go offline (None if
    not within the bound + 10 s): the presence heartbeat and expiry still run."""
    extra = await asyncio.to_thread(env.cluster.add_gateway, 9)
    room = scene.rooms[0]
    observer = next(p for p in scene.peers if p.rooms == [room.id] and p.connected.is_set())
    mover = Peer(
        scene.spare[0], lambda: [extra.url], env.cluster.history.url, [room.id], scene.http
    )
    try:
        mover.start()
        await wait_until(mover.connected.is_set, 15, "a client on the extra gateway")
        name = mover.user.username
        t_up = now()
        await wait_until(
            lambda: any(u == name and on and t >= t_up - 1 for t, u, on in observer.presence),
            10,
            "the observer sees it online",
        )
        mover.hold()
        t_kill = now()
        extra.signal(signal.SIGKILL)
        try:
            t_off = await wait_until(
                lambda: any(u == name and not on and t >= t_kill for t, u, on in observer.presence),
                PRESENCE_TIMEOUT + 1 + 3 + 10,
                "its user goes offline",
            )
        except AssertionError:
            return None
        return t_off - t_kill
    finally:
        await mover.stop()
        extra.stop()
        env.cluster.procs.remove(extra)


def _bus_users(env: FaultEnv) -> list[str]:
    return [p.name for p in env.cluster.procs if p.name != "auth"]


def test_kill_9_broker_under_load_then_restart(faults: FaultEnv) -> None:
    env = faults

    async def scenario() -> None:
        scene = await open_scene(
            "broker-kill",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            env.cluster.history.url,
            rooms=4,
            members=6,
            senders_per_room=2,
            spare_per_room=1,
        )
        monitor = ReadyMonitor(env.services())
        monitor.start()
        late: Peer | None = None
        partner: Peer | None = None
        try:
            await monitor.wait_all(True, 10)
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 150, 30, "traffic flowing")

            t_kill = now()
            env.rabbit.kill9()
            detected = await monitor.wait_all(False, 15, _bus_users(env))
            # sends go on during the outage: each one must be answered with an error
            await wait_until(
                lambda: (
                    sum(
                        1
                        for a in scene.ledger.answers_between(t_kill, now())
                        if a.kind == "unavailable"
                    )
                    >= len(scene.traffic.senders)
                ),
                15,
                "unavailable errors during the outage",
            )
            # a first message to a new contact (`to`: the gateway creates the direct room and
            # must bind it) is answered during the outage too, not held until the broker is back
            sender = scene.peers[0]
            t_to = now()
            try:
                to_answer: dict[str, object] | None = await sender.send(
                    None,
                    "hello new contact",
                    "to-during-outage",
                    to=scene.spare[1].username,
                    timeout=5.0,
                )
            except TimeoutError:
                to_answer = None
            to_latency = now() - t_to
            # a client connecting during the outage, alone in its room on its gateway (so only
            # its own connect can bind the room there); once the broker is back it must get the
            # live messages its partner, on another gateway, sends
            pair = env.seeder.users(2, prefix="p")
            duo = env.seeder.rooms([pair], name="duo")[0]
            scene.rooms.append(duo)
            gws = [g.url for g in env.cluster.gateway_procs]
            late = Peer(pair[0], lambda: gws[:1], env.cluster.history.url, [duo.id], scene.http)
            late.ready_timeout = 60.0
            t_late = now()
            late.start()
            partner = Peer(pair[1], lambda: gws[1:], env.cluster.history.url, [duo.id], scene.http)
            acked_before_restart = len(scene.ledger.acked)

            boot = await asyncio.to_thread(env.rabbit.start)
            t_back = now()
            t_ready = await monitor.wait_all(True, 60)
            connected_before = [p for p in scene.peers if p.conns == 1]
            await wait_until(
                lambda: all(p.event_times("synced", t_back) for p in [*scene.peers, late]),
                40,
                "every client re-synced after the broker came back",
            )
            t_resynced = now()
            await wait_until(
                late.connected.is_set,
                30,
                "the client that connected during the outage is ready",
                detail=lambda: late.events[-5:],
            )
            late_ready = late.event_times("ready")[0]
            resync_told = sum(1 for p in connected_before if p.event_times("resync", t_kill))
            # live traffic flows again, and reaches the client that joined during the outage
            await wait_until(
                lambda: len(scene.ledger.acked) >= acked_before_restart + 150, 30, "traffic after"
            )
            partner.start()
            await wait_until(partner.synced.is_set, 20, "the partner connected after the outage")
            before_live = late.live
            for i in range(5):
                op = scene.ledger.begin(
                    partner.user.id, partner.user.username, duo.id, f"duo-{i}", "hi"
                )
                scene.ledger.attempt(op)
                answer = await partner.send(duo.id, "hi", f"duo-{i}", timeout=10)
                scene.ledger.answered(op, answer, 0.0)
            try:
                await wait_until(
                    lambda: late.live >= before_live + 5, 10, "live to the late client"
                )
                late_live = True
            except AssertionError:
                late_live = False
            scene.peers += [late, partner]
            verdict, drained, gaps = await finish(scene, env.database_url)
            outage = scene.ledger.answers_between(t_kill, t_ready)
            figures = {
                **summary(scene),
                **verdict.figures,
                "broker_boot_s": round(boot, 2),
                "detected_s": since(t_kill, detected),
                "down_s": since(t_kill, t_back),
                "services_ready_after_restart_s": since(t_back, t_ready),
                "first_ack_after_restart_s": since(t_back, scene.ledger.first_ack_after(t_back)),
                "all_clients_resynced_s": since(t_back, t_resynced),
                "clients_told_resync": f"{resync_told}/{len(connected_before)}",
                "answers_during_outage": {
                    k: sum(1 for a in outage if a.kind == k) for k in {a.kind for a in outage}
                },
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
                "to_send_during_outage": (to_answer or {}).get("code", "no answer"),
                "to_send_answer_s": round(to_latency, 2),
                "connect_during_outage_ready_after_s": since(t_late, late_ready),
                "broker_back_after_connect_s": since(t_late, t_back),
                "frames_before_ready": sum(p.early_frames for p in scene.peers),
                "client_connected_during_outage_gets_live_messages": late_live,
            }
            report("1 broker kill -9", figures)
            failures = [*verdict.problems, *gaps]
            if scene.traffic.unexpected:
                failures.append(f"unexpected answers: {scene.traffic.unexpected[:3]}")
            answers = scene.ledger.figures()["answers"]
            if answers.get("timeout", 0):
                failures.append(f"sends left hanging: {answers}")
            if scene.ledger.figures()["max_answer_s"] > ANSWER_BOUND:
                failures.append(f"slow answers: {scene.ledger.figures()}")
            if resync_told != len(connected_before):
                failures.append(f"told to resync: {resync_told}/{len(connected_before)}")
            if to_answer is None:
                failures.append(
                    f"a send with `to` (a new direct room) got no answer in {to_latency:.1f}s "
                    "while the broker was down: the gateway waits for the broker to bind the room"
                )
            elif to_answer["type"] != "error" or to_answer.get("code") != "unavailable":
                failures.append(f"a send with `to` during the outage: {to_answer}")
            if not late_live:
                failures.append(
                    "a client that connected during the outage gets no live messages: its room "
                    "was never bound on its gateway"
                )
            if figures["frames_before_ready"]:
                failures.append(f"{figures['frames_before_ready']} frames came before `ready`")
            assert not failures, failures
        finally:
            await monitor.stop()
            await scene.close()
            for extra in (late, partner):
                if extra is not None:
                    await extra.stop()

    asyncio.run(scenario())


def test_sigstop_broker_dead_connections_detected_then_recovery(faults: FaultEnv) -> None:
    env = faults
    hb = env.heartbeat

    async def scenario() -> None:
        scene = await open_scene(
            "broker-sigstop",
            env.seeder,
            lambda: [g.url for g in env.cluster.gateway_procs],
            env.cluster.history.url,
            rooms=3,
            members=5,
            senders_per_room=2,
            spare_per_room=1,
        )
        monitor = ReadyMonitor(env.services(), interval=0.1)
        monitor.start()
        try:
            await monitor.wait_all(True, 10)
            scene.traffic.start()
            await wait_until(lambda: len(scene.ledger.acked) >= 100, 30, "traffic flowing")
            t_stop = now()
            env.rabbit.pause()
            # frozen, not gone: the TCP connections stay open; only heartbeats can tell.
            # Keep it frozen until every service has noticed (bounded), at least 2 heartbeats.
            bound = 2 * hb + hb / 2 + 3  # "about two heartbeats": see docs/RELIABILITY.md
            try:
                await monitor.wait_all(False, 3 * (hb + 1) + hb + 10, _bus_users(env))
            except AssertionError:
                pass
            await wait_until(lambda: now() - t_stop >= 2 * hb, 2 * hb + 1, "two heartbeats")
            detect = {n: since(t_stop, monitor.first(n, False, t_stop)) for n in _bus_users(env)}
            t_cont = now()
            env.rabbit.resume()
            t_ready = await monitor.wait_all(True, 60)
            await wait_until(
                lambda: all(p.event_times("synced", t_cont) for p in scene.peers),
                40,
                "every client re-synced",
            )
            t_resynced = now()
            acked = len(scene.ledger.acked)
            await wait_until(lambda: len(scene.ledger.acked) >= acked + 100, 30, "traffic after")
            # presence survives: every gateway keeps heartbeating after the reconnect, so no
            # connected user expires anywhere (watch for longer than the presence timeout)
            await wait_until(lambda: now() >= t_ready + PRESENCE_TIMEOUT + 3, 30, "expiry window")
            offline = await offline_somewhere(env, scene)
            # and presence still works: a gateway killed now has its users expire in time
            expiry = await dead_gateway_expiry(env, scene)
            verdict, drained, gaps = await finish(scene, env.database_url)
            paused = scene.ledger.answers_between(t_stop, t_cont)
            figures = {
                **summary(scene),
                **verdict.figures,
                "heartbeat_s": hb,
                "frozen_s": since(t_stop, t_cont),
                "detected_s": detect,
                "detection_bound_s": bound,
                "services_ready_after_sigcont_s": since(t_cont, t_ready),
                "all_clients_resynced_s": since(t_cont, t_resynced),
                "answers_while_frozen": {
                    k: sum(1 for a in paused if a.kind == k) for k in {a.kind for a in paused}
                },
                "history_drain_s": round(drained, 2),
                "gaps": len(gaps),
                "connected_users_shown_offline": len(offline),
                "dead_gateway_users_offline_after_s": None if expiry is None else round(expiry, 2),
            }
            report("2 broker SIGSTOP", figures)
            failures = [*verdict.problems, *gaps]
            if scene.traffic.unexpected:
                failures.append(f"unexpected answers: {scene.traffic.unexpected[:3]}")
            answers = scene.ledger.figures()["answers"]
            if answers.get("timeout", 0):
                failures.append(
                    f"sends left hanging: {answers}; "
                    + "; ".join(scene.ledger.troubled(t_stop)[:3])
                )
            if offline:
                failures.append(f"connected users shown offline after the recovery: {offline[:5]}")
            if expiry is None or expiry > PRESENCE_TIMEOUT + 1 + 3:
                failures.append(
                    f"after the freeze, a killed gateway's users stay online ({expiry}): the "
                    "gateways' presence heartbeat/expiry task is gone"
                )
            late = {n: t for n, t in detect.items() if t is None or t > bound}
            if late:
                failures.append(
                    f"dead broker connections not detected within about two heartbeats "
                    f"({bound:.1f}s for heartbeat={hb}s): {detect}"
                )
            assert not failures, failures
        finally:
            env.rabbit.resume()
            await monitor.stop()
            await scene.close()

    asyncio.run(scenario())


def test_retry_after_an_ambiguous_unavailable_is_acked_as_stored(faults: FaultEnv) -> None:
    """F9, deterministically. The broker freezes with a send in flight; the gateway declares the
    connection dead and answers ``unavailable``, but the publish's frames already sit in the
    broker's socket: on SIGCONT the broker routes it. The history writer is frozen meanwhile
    (SIGSTOP), so when the client resends with ``retry: true`` the gateway cannot find the
    message in history. Before F9's fix it published it again and acked that second version;
    now it must wait for the writer (a sync marker) and answer ``unavailable`` while the writer
    is frozen. Once the writer is back, the retry's ack (and the live copy of the other member)
    must be the stored message, same ``sent_at``."""
    env = faults
    writer = env.cluster.history
    gw_urls = [g.url for g in env.cluster.gateway_procs]

    async def scenario() -> dict[str, object]:
        scene = await open_scene(
            "ambiguous-retry",
            env.seeder,
            lambda: gw_urls,
            writer.url,
            rooms=1,
            members=2,
            senders_per_room=0,
        )
        sender, other = scene.peers
        room = scene.rooms[0].id
        monitor = ReadyMonitor({"gw": sender.current_gateway}, interval=0.05)
        monitor.start()
        try:
            await monitor.wait_all(True, 10)
            writer.signal(signal.SIGSTOP)
            t0 = now()
            env.rabbit.pause()
            await wait_until(lambda: now() - t0 >= 1.0, 2, "a second of silence")
            op = scene.ledger.begin(sender.user.id, sender.user.username, room, "amb-1", "maybe")
            scene.ledger.attempt(op)
            first = await sender.send(room, "maybe", "amb-1", timeout=15)
            scene.ledger.answered(op, first, now() - t0)
            await monitor.wait_all(False, 15)  # the gateway declared the connection dead
            env.rabbit.resume()
            await monitor.wait_all(True, 30)
            # the writer is still frozen: the gateway cannot learn whether the first attempt
            # reached history, so the retry must not publish a second version
            scene.ledger.attempt(op)
            while_frozen = await sender.send(room, "maybe", "amb-1", retry=True, timeout=15)
            scene.ledger.answered(op, while_frozen, now() - t0)
            writer.signal(signal.SIGCONT)
            ack: dict[str, object] = {}
            deadline = now() + 30
            while ack.get("type") != "ack":
                assert now() < deadline, f"no ack for the retry within 30 s: {ack}"
                scene.ledger.attempt(op)
                ack = await sender.send(room, "maybe", "amb-1", retry=True, timeout=15)
                scene.ledger.answered(op, ack, now() - t0)
                if ack.get("type") != "ack":
                    await asyncio.sleep(0.1)
            mid = ack["message"]["id"]  # type: ignore[index]
            await wait_until(lambda: mid in other.messages, 20, "the other member has it")
            verdict, _ = await asyncio.to_thread(
                wait_verified, scene.ledger, env.database_url, [room], 60
            )
            return {
                "first_answer": first.get("code", first.get("type")),
                "retry_while_writer_frozen": while_frozen.get("code", while_frozen.get("type")),
                "ack": ack["message"]["sent_at"],  # type: ignore[index]
                "history": verdict.rows[mid]["sent_at"] if mid in verdict.rows else None,
                "live": other.messages[mid]["sent_at"],
                "problems": verdict.problems,
            }
        finally:
            writer.signal(signal.SIGCONT)
            env.rabbit.resume()
            await monitor.stop()
            await scene.close()

    out = asyncio.run(scenario())
    report("9 ambiguous unavailable, then retry", dict(out))
    assert out["first_answer"] == "unavailable", out
    assert out["retry_while_writer_frozen"] == "unavailable", out
    assert out["ack"] == out["history"] == out["live"], out
    assert not out["problems"], out
