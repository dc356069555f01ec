"""History scale-out (issue 14): backlog drain rate and CPU per message with 1, 2 and 4 shards
and as many writer processes, on the local RabbitMQ and MariaDB.

    python -m bench.history_scale '{"messages": 20000, "shards": [1, 2, 4], "rooms": 64}'

For each count: a vhost and a database of its own; N writer processes (``python -m services
history``, as in production) started and left to share the shards (one each), then frozen
(SIGSTOP); the backlog is published (persistent, confirmed, spread over ``rooms`` rooms); the
writers are released at once (SIGCONT) and the time until every row is committed is the drain.
CPU: the writers', MariaDB's and RabbitMQ's, during the drain, per message.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

import httpx
import orjson

from bench.common import (
    PYTHON,
    ROOT,
    amqp_url,
    cpu_seconds,
    create_database,
    create_vhost,
    delete_vhost,
    drop_database,
    find_pids,
    log,
    mysql_rows,
    mysql_url,
)
from services.common import topology
from services.common.bus import create_bus
from services.common.ids import iso_ms, message_id, now_ms
from tools.cluster import free_port, wait_http


def held(port: int) -> int:
    try:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=3).text
    except httpx.HTTPError:
        return -1
    for line in text.splitlines():
        if line.startswith("chat_history_shards_held "):
            return int(float(line.split()[1]))
    return -1


async def publish_backlog(url: str, n: int, rooms: int, shards: int, window: int = 256) -> float:
    bus = create_bus(url)
    await bus.connect()
    sem = asyncio.Semaphore(window)
    t0 = time.perf_counter()

    async def one(i: int) -> None:
        async with sem:
            room = f"r{i % rooms:025d}"
            ms = now_ms()
            cmid = f"c{i}"
            doc = {
                "type": "message",
                "message": {
                    "id": message_id("bench", cmid),
                    "room": room,
                    "sender": "bench",
                    "body": f"backlog {i} " + "x" * 40,
                    "sent_at": iso_ms(ms),
                    "client_msg_id": cmid,
                },
                "sender_id": "bench",
                "sent_ms": ms,
                "origin": {"gw": "bench", "conn": "c"},
            }
            await bus.publish(
                topology.MESSAGES,
                topology.room_msg_key(room, shards),
                orjson.dumps(doc),
                mandatory=True,
                persistent=True,
            )

    await asyncio.gather(*(one(i) for i in range(n)))
    took = time.perf_counter() - t0
    await bus.close()
    return took


def run_one(shards: int, spec: dict[str, Any]) -> dict[str, Any]:
    n, rooms = int(spec["messages"]), int(spec["rooms"])
    vhost, db = create_vhost("hscale"), create_database("hscale")
    amqp, dburl = amqp_url(vhost), mysql_url(db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(
        CHAT_DATABASE_URL=dburl,
        CHAT_BROKER_URL=amqp,
        CHAT_JWT_SECRET="bench-" + "x" * 40,
        CHAT_LOG_LEVEL="WARNING",
        CHAT_HISTORY_SHARDS=str(shards),
    )
    procs: list[tuple[subprocess.Popen[bytes], int]] = []
    try:
        subprocess.run(
            [PYTHON, "-m", "services", "migrate"],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
        # the rooms exist, as in production (the writer bumps their last_activity_ms; an UPDATE
        # of missing rows would take gap locks that serialise the writers for nothing)
        mysql_rows(
            db,
            "INSERT INTO rooms (id, kind, name, created_ms, last_activity_ms, version, "
            "member_count) VALUES "
            + ",".join(f"('r{i:025d}', 'group', 'b', 0, 0, 1, 0)" for i in range(rooms)),
        )
        for i in range(shards):
            port = free_port()
            p = subprocess.Popen(
                [PYTHON, "-m", "services", "history"],
                cwd=ROOT,
                env={**env, "CHAT_PORT": str(port), "CHAT_GATEWAY_ID": f"hscale-{i}"},
            )
            wait_http(f"http://127.0.0.1:{port}/readyz", 60, p)
            procs.append((p, port))
        deadline = time.monotonic() + 60
        while any(held(port) != 1 for _, port in procs):  # one shard each
            if time.monotonic() > deadline:
                raise RuntimeError(f"writers did not share: {[held(p) for _, p in procs]}")
            time.sleep(0.2)
        for p, _ in procs:
            p.send_signal(signal.SIGSTOP)
        publish_s = asyncio.run(publish_backlog(amqp, n, rooms, shards))
        groups = {
            "writers": [p.pid for p, _ in procs],
            "mysql": find_pids(["mariadbd", "mysqld"]),
            "rabbitmq": find_pids(["beam.smp"]),
        }
        cpu0 = {g: sum(cpu_seconds(pid) for pid in pids) for g, pids in groups.items()}
        t0 = time.perf_counter()
        for p, _ in procs:
            p.send_signal(signal.SIGCONT)
        while True:
            rows = mysql_rows(db, "SELECT COUNT(*) FROM messages")[0][0]
            if rows >= n:
                break
            if time.perf_counter() - t0 > 600:
                raise RuntimeError(f"drain too slow: {rows} of {n}")
            time.sleep(0.05)
        drain_s = time.perf_counter() - t0
        cpu = {g: sum(cpu_seconds(pid) for pid in pids) - cpu0[g] for g, pids in groups.items()}
        result = {
            "shards": shards,
            "writers": shards,
            "messages": n,
            "publish_s": round(publish_s, 2),
            "drain_s": round(drain_s, 2),
            "drain_rate": round(n / drain_s),
            "cpu_ms_per_msg": {g: round(v / n * 1000, 3) for g, v in cpu.items()},
            "cpu_ms_per_msg_total": round(sum(cpu.values()) / n * 1000, 3),
        }
        log(f"history scale-out: {result}")
        return result
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGCONT)
            p.terminate()
        for p, _ in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        drop_database(db)
        delete_vhost(vhost)


def main() -> None:
    spec = {"messages": 20000, "shards": [1, 2, 4], "rooms": 64}
    if len(sys.argv) > 1:
        spec.update(json.loads(sys.argv[1]))
    runs = [run_one(int(s), spec) for s in spec["shards"]]
    by = {r["shards"]: r for r in runs}
    out: dict[str, Any] = {"runs": runs, "cpus": os.cpu_count()}
    if 1 in by and 2 in by:
        out["ratio_2_over_1"] = round(by[2]["drain_rate"] / by[1]["drain_rate"], 2)
    if 1 in by and 4 in by:
        out["ratio_4_over_1"] = round(by[4]["drain_rate"] / by[1]["drain_rate"], 2)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
