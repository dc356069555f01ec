"""Ceilings on this machine, from the same run as the scenarios:

- AMQP round trip, one process, on the same broker (own vhost) and the same client library as
  the services: publish → consume through a topic exchange (``room.<id>.msg`` keys, a queue bound
  with ``room.*.msg``, consumer with prefetch 2000 and no-ack like a gateway's queue), with and
  without publisher confirms (aio-pika, as ``services/common/bus/amqp.py`` uses it), and the
  same with aio-pika's lower-level aiormq channel;
- aiormq publish-only (with and without confirms, to an exchange with no bindings);
- a raw Starlette/uvicorn WebSocket relay (bench/relay_app.py) as its own uvicorn process,
  driven by the same load generator and pairs as the chat scenario.

    python -m bench.ceiling '{"messages": 20000, "relay": {...pairs spec...}}'
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from typing import Any

import aio_pika
import aiormq
import orjson

from bench.common import (
    PYTHON,
    ROOT,
    amqp_url,
    create_vhost,
    delete_vhost,
    find_pids,
    free_port,
    log,
    run_json,
    stop_proc,
    wait_http,
)

BODY = orjson.dumps(
    {
        "type": "message",
        "message": {
            "id": "0" * 26,
            "room": "r" * 26,
            "sender": "alice",
            "body": "x" * 64,
            "sent_at": "2026-11-23T10:15:30.123Z",
            "client_msg_id": "c" * 36,
        },
        "sender_id": "u" * 26,
        "sent_ms": 0,
        "origin": {"gw": "gw1-12345", "conn": "c1"},
    }
)  # the size of the gateway's wire message (~330 bytes)
EXCHANGE = "bench.topic"
PUBLISHERS = 64  # concurrent publishers awaiting their confirm (a gateway has one task per send)


async def aiopika_roundtrip(
    url: str, n: int, confirms: bool, durable: bool = False
) -> dict[str, Any]:
    """``durable``: the chat's own path: persistent messages, and the exchange also routes to a
    durable quorum queue (like chat.history) that a second consumer acks message by message."""
    conn = await aio_pika.connect(url)
    try:
        pub = await conn.channel(publisher_confirms=confirms)
        sub = await conn.channel(publisher_confirms=False)
        await sub.set_qos(prefetch_count=2000)
        ex = await pub.declare_exchange(EXCHANGE, aio_pika.ExchangeType.TOPIC, auto_delete=True)
        q = await sub.declare_queue(exclusive=True, auto_delete=True)
        await q.bind(EXCHANGE, "room.*.msg")
        got = 0
        done = asyncio.Event()
        stored = 0
        all_stored = asyncio.Event()
        if durable:
            hist = await conn.channel(publisher_confirms=False)
            await hist.set_qos(prefetch_count=400)
            hq = await hist.declare_queue(
                "bench.quorum", durable=True, arguments={"x-queue-type": "quorum"}
            )
            await hq.bind(EXCHANGE, "room.*.msg")

            async def on_stored(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                nonlocal stored
                await message.ack()
                stored += 1
                if stored >= n:
                    all_stored.set()

            await hq.consume(on_stored)

        async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal got
            got += 1
            if got >= n:
                done.set()

        await q.consume(on_message, no_ack=True)
        todo = iter(range(n))
        t0 = time.perf_counter()
        c0 = time.process_time()

        async def publisher() -> None:
            for i in todo:
                msg = aio_pika.Message(
                    BODY,
                    content_type="application/json",
                    delivery_mode=(
                        aio_pika.DeliveryMode.PERSISTENT
                        if durable
                        else aio_pika.DeliveryMode.NOT_PERSISTENT
                    ),
                )
                await ex.publish(msg, f"room.{i % 100}.msg", mandatory=confirms)

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        t_pub = time.perf_counter() - t0
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
        if durable:
            await asyncio.wait_for(all_stored.wait(), 120)
        t_stored = time.perf_counter() - t0
        cpu = time.process_time() - c0
        if durable:
            await hq.delete(if_unused=False, if_empty=False)
    finally:
        await conn.close()
    return {
        "messages": n,
        "confirms": confirms,
        "durable_quorum": durable,
        "publish_s": round(t_pub, 2),
        "elapsed_s": round(elapsed, 2),
        "rate": round(n / elapsed, 1),
        "stored_rate": round(n / t_stored, 1) if durable else None,
        "cpu_ms_per_msg": round(1000 * cpu / n, 4),
    }


async def aiormq_roundtrip(url: str, n: int, confirms: bool, wait: bool = True) -> dict[str, Any]:
    conn = await aiormq.connect(url)
    try:
        pub = await conn.channel(publisher_confirms=confirms)
        sub = await conn.channel(publisher_confirms=False)
        await sub.basic_qos(prefetch_count=2000)
        await pub.exchange_declare(EXCHANGE, exchange_type="topic", auto_delete=True)
        q = await sub.queue_declare("", exclusive=True, auto_delete=True)
        await sub.queue_bind(q.queue, EXCHANGE, routing_key="room.*.msg")
        got = 0
        done = asyncio.Event()

        async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
            nonlocal got
            got += 1
            if got >= n:
                done.set()

        await sub.basic_consume(q.queue, on_message, no_ack=True)
        props = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=1)
        todo = iter(range(n))
        t0 = time.perf_counter()
        c0 = time.process_time()

        async def publisher() -> None:
            for i in todo:
                await pub.basic_publish(
                    BODY,
                    exchange=EXCHANGE,
                    routing_key=f"room.{i % 100}.msg",
                    properties=props,
                    mandatory=confirms,
                    wait=wait,
                )

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        await asyncio.wait_for(done.wait(), 120)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        await conn.close()
    return {
        "messages": n,
        "confirms": confirms,
        "wait_drain": wait,
        "elapsed_s": round(elapsed, 2),
        "rate": round(n / elapsed, 1),
        "cpu_ms_per_msg": round(1000 * cpu / n, 4),
    }


async def aiormq_publish_only(url: str, n: int, confirms: bool) -> dict[str, Any]:
    conn = await aiormq.connect(url)
    try:
        ch = await conn.channel(publisher_confirms=confirms)
        await ch.exchange_declare("bench.sink", exchange_type="topic", auto_delete=True)
        props = aiormq.spec.Basic.Properties(content_type="application/json", delivery_mode=1)
        todo = iter(range(n))
        t0 = time.perf_counter()
        c0 = time.process_time()

        async def publisher() -> None:
            for i in todo:
                await ch.basic_publish(
                    BODY, exchange="bench.sink", routing_key=f"room.{i % 100}.msg", properties=props
                )

        await asyncio.gather(*(publisher() for _ in range(PUBLISHERS)))
        if not confirms:  # make sure the broker has them all: one confirmed round trip
            await ch.basic_qos(prefetch_count=1)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
    finally:
        await conn.close()
    return {
        "messages": n,
        "confirms": confirms,
        "elapsed_s": round(elapsed, 2),
        "rate": round(n / elapsed, 1),
        "cpu_ms_per_msg": round(1000 * cpu / n, 4),
    }


def uvicorn_argv(app: str, port: int) -> list[str]:
    """The gateway's server stack (services/server.py): uvloop, httptools, websockets-sansio."""
    return [
        PYTHON,
        "-m",
        "uvicorn",
        app,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        "websockets-sansio",
        "--ws-max-size",
        str(64 * 1024),
        "--loop",
        "uvloop",
        "--http",
        "httptools",
        "--log-level",
        "warning",
        "--no-access-log",
    ]


def relay(spec: dict[str, Any], amqp: str = "") -> dict[str, Any]:
    """The relay of bench/relay_app.py under the loadgen's closed loop; with ``amqp`` (a vhost's
    URL) it goes through RabbitMQ and a drainer process empties its quorum queue."""
    port = free_port()
    env = dict(os.environ, RELAY_AMQP_URL=amqp) if amqp else None
    drainer: subprocess.Popen[bytes] | None = None
    if amqp:
        drainer = subprocess.Popen(
            [PYTHON, "-m", "bench.relay_app", "drain", amqp], cwd=ROOT, stdout=subprocess.PIPE
        )
        assert drainer.stdout is not None
        drainer.stdout.readline()  # "draining": the queue exists before the relay binds it
    proc = subprocess.Popen(uvicorn_argv("bench.relay_app:app", port), cwd=ROOT, env=env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", 30, proc)
        n = int(spec.get("pairs", 12))
        pairs = [
            {
                "send_url": url,
                "recv_url": url,
                "send_auth": f"s{i}",
                "recv_auth": f"r{i}",
                "target": f"r{i}",
            }
            for i in range(n)
        ]
        run = dict(spec)
        run.update(scenario="pairs", protocol="relay", mode="closed", pairs=pairs)
        from bench.common import CpuMeter

        groups = {"relay": [proc.pid]}
        if drainer is not None:
            groups["drainer"] = [drainer.pid]
        if amqp:
            groups["rabbitmq"] = find_pids(["beam.smp"])
        meter = CpuMeter(groups)
        meter.start()
        out = run_json([PYTHON, "-m", "bench.loadgen", json.dumps(run)], timeout=300)
        out["cpu"] = meter.stop()
        if amqp:  # the latency the same path allows at the chat's fixed rates
            out["latency"] = []
            for rate in spec.get("rates", []):
                log(f"ceiling: bare relay through RabbitMQ at {rate} msg/s")
                paced = dict(run, mode="rate", rate=rate, duration=spec.get("latency_s", 8))
                meter = CpuMeter(groups)
                meter.start()
                one = run_json([PYTHON, "-m", "bench.loadgen", json.dumps(paced)], timeout=300)
                one["cpu"] = meter.stop()
                out["latency"].append(one)
        return out
    finally:
        stop_proc(proc)
        if drainer is not None:
            stop_proc(drainer)


async def amqp_all(url: str, n: int, only_baseline: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log(f"ceiling: aio-pika round trip with confirms ({n} messages)")
    out["aiopika_roundtrip_confirms"] = await aiopika_roundtrip(url, n, True)
    if only_baseline:
        return out
    log("ceiling: aio-pika round trip with confirms, persistent, + a quorum queue (chat's path)")
    out["aiopika_roundtrip_confirms_quorum"] = await aiopika_roundtrip(url, n, True, durable=True)
    log("ceiling: aio-pika round trip without confirms")
    out["aiopika_roundtrip_noconfirms"] = await aiopika_roundtrip(url, n, False)
    log("ceiling: aiormq round trip with confirms (wait for drain, as aio-pika does)")
    out["aiormq_roundtrip_confirms"] = await aiormq_roundtrip(url, n, True, wait=True)
    log("ceiling: aiormq round trip with confirms, wait=False")
    out["aiormq_roundtrip_confirms_nowait"] = await aiormq_roundtrip(url, n, True, wait=False)
    log("ceiling: aiormq publish-only with and without confirms")
    out["aiormq_publish_confirms"] = await aiormq_publish_only(url, n, True)
    out["aiormq_publish_noconfirms"] = await aiormq_publish_only(url, n, False)
    return out


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    n = int(spec.get("messages", 20000))
    vhost = create_vhost("bench_ceiling")
    try:
        import uvloop

        t0 = time.perf_counter()
        only = bool(spec.get("only_baseline"))
        result: dict[str, Any] = {"amqp": uvloop.run(amqp_all(amqp_url(vhost), n, only))}
        result["amqp_s"] = round(time.perf_counter() - t0, 1)
    finally:
        delete_vhost(vhost)
    if spec.get("relay") is not None:
        log("ceiling: raw Starlette/uvicorn WebSocket relay")
        result["relay"] = relay(spec["relay"])
        log("ceiling: the same relay through RabbitMQ (confirms, persistent, + a quorum queue)")
        vhost = create_vhost("bench_relay")
        try:
            result["relay_amqp"] = relay(spec["relay"], amqp_url(vhost))
        finally:
            delete_vhost(vhost)
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
