"""The writer on the real RabbitMQ (own vhost, the real quorum-queue topology) and the real
MariaDB (own database): duplicates, poison to chat.history.dead, kill -9 of writer processes.

Skipped with a loud reason when RabbitMQ or MariaDB is unreachable; failed instead under CI=true.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy.engine import Engine

from services.common import topology
from services.common.bus import Bus, Delivery, create_bus
from services.history import metrics
from services.history.store import history_engine
from services.history.writer import HistoryWriter
from tools.cluster import free_port

from .helpers import SECRET, count_rows, eventually, message_ids, publish, settings, wire

pytestmark = pytest.mark.anyio

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ["r" + str(i).zfill(25) for i in range(4)]
ALICE = "u" + "a" * 25


@pytest.fixture
def mysql_engine(mysql_url: str) -> Iterator[Engine]:
    engine = history_engine(mysql_url)
    yield engine
    engine.dispose()


async def test_duplicates_yield_one_row(amqp_bus: Bus, mysql_engine: Engine) -> None:
    dups_before = sample(metrics.DUPLICATES)
    ids = []
    for i in range(200):
        key, body, mid = wire(ROOMS[i % 4], ALICE, f"d{i}")
        ids.append(mid)
        copies = 3 if i % 10 == 0 else 1  # some published three times, on purpose
        for _ in range(copies):
            await publish(amqp_bus, key, body)
    w = HistoryWriter(settings(history_batch_size=50), amqp_bus, mysql_engine)
    await w.start()
    try:
        await eventually(lambda: count_rows(mysql_engine) == 200, what="200 rows")
        # the same messages again, later (a retried send or a redelivery after a crash)
        for i in range(0, 200, 7):
            key, body, _ = wire(ROOMS[i % 4], ALICE, f"d{i}")
            await publish(amqp_bus, key, body)
        # 20 messages x 2 extra copies + 29 late copies, each seen and not written again
        await eventually(lambda: sample(metrics.DUPLICATES) - dups_before >= 69, what="dups")
        await eventually(_drained(amqp_bus), what="the queue drained")
    finally:
        await w.stop()
    assert sorted(message_ids(mysql_engine)) == sorted(ids)
    assert sample(metrics.DUPLICATES) - dups_before == 69


def sample(metric: Any) -> float:
    return sum(s.value for f in metric.collect() for s in f.samples if s.name.endswith("_total"))


def _drained(bus: Bus) -> object:
    async def check() -> bool:
        return await bus.queue_depth(topology.history_queue(0)) == 0

    return check


async def test_poison_reaches_the_dead_letter_queue(amqp_bus: Bus, mysql_engine: Engine) -> None:
    poison: list[bytes] = []
    good: list[str] = []
    room = ROOMS[1]
    for i in range(100):
        if i == 10:
            poison.append(b"\xff\xfe not json at all")
            await publish(amqp_bus, topology.room_msg_key(room, 1), poison[-1])
        if i == 50:  # valid JSON, but sent_ms is a string
            _, body, _ = wire(room, ALICE, "bad-sent-ms")
            doc = orjson.loads(body)
            doc["sent_ms"] = "yesterday"
            poison.append(orjson.dumps(doc))
            await publish(amqp_bus, topology.room_msg_key(room, 1), poison[-1])
        if i == 70:  # MariaDB rejects it: 70 kB does not fit the TEXT column (strict mode)
            _, body, _ = wire(room, ALICE, "too-long", body="x" * 70_000)
            poison.append(body)
            await publish(amqp_bus, topology.room_msg_key(room, 1), body)
        key, body, mid = wire(room, ALICE, f"p{i}")
        good.append(mid)
        await publish(amqp_bus, key, body)
    w = HistoryWriter(settings(history_batch_size=50), amqp_bus, mysql_engine)
    await w.start()
    dead: list[Delivery] = []

    async def on_dead(delivery: Delivery) -> None:
        dead.append(delivery)
        await delivery.ack()

    try:
        await eventually(lambda: count_rows(mysql_engine) == 100, what="the good messages")
        await amqp_bus.consume(topology.DEAD_QUEUE, on_dead, prefetch=10)
        await eventually(lambda: len(dead) == 3, what="three dead letters")
        await eventually(_drained(amqp_bus), what="the queue drained")
    finally:
        await w.stop()
    assert sorted(message_ids(mysql_engine)) == sorted(good)
    assert sorted(d.body for d in dead) == sorted(poison)
    # dead-lettered by the broker from chat.history, rejected by the writer
    for d in dead:
        death = d.headers.get("x-death") or []
        assert death and death[0]["queue"] == topology.history_queue(0), d.headers
        assert death[0]["reason"] == "rejected", d.headers


# kill -9 of writer processes --------------------------------------------------------------
class WriterProcess:
    """``python -m services history`` (what production runs) with the test's vhost and db."""

    def __init__(self, rabbit_url: str, mysql_url: str, tmp: Path, name: str) -> None:
        self.port = free_port()
        self.log = tmp / f"{name}.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("CHAT_")},
            "CHAT_LOG_LEVEL": "WARNING",
            "CHAT_TARGET": "history",
            "CHAT_DATABASE_URL": mysql_url,
            "CHAT_BROKER_URL": rabbit_url,
            "CHAT_JWT_SECRET": SECRET,
            "CHAT_PORT": str(self.port),
            "CHAT_HOST": "127.0.0.1",
            "CHAT_GATEWAY_ID": f"hist-{name}",
            "CHAT_HISTORY_BATCH_SIZE": "50",
            "CHAT_HISTORY_BATCH_MS": "5",
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services", "history"],
            cwd=ROOT,
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )

    async def ready(self) -> None:
        async def check() -> bool:
            if self.proc.poll() is not None:
                raise AssertionError(f"writer exited: {self.log.read_text()[-2000:]}")
            try:
                async with httpx.AsyncClient() as c:
                    r = await c.get(f"http://127.0.0.1:{self.port}/readyz", timeout=1)
                return r.status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(check, timeout=20, what="the writer process ready")

    async def metric(self, name: str) -> float:
        async with httpx.AsyncClient() as c:
            text = (await c.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5)).text
        return sum(
            float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")
        )

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


async def test_kill_9_writers_mid_batch_then_restart(
    rabbit_url: str, mysql_url: str, mysql_engine: Engine, amqp_bus: Bus, tmp_path: Path
) -> None:
    """Two replicas (single active consumer): kill -9 the active one while it writes, the
    standby takes over; kill -9 that one too, restart one: every confirmed message once."""
    n = 8_000
    procs = [WriterProcess(rabbit_url, mysql_url, tmp_path, "a")]
    try:
        await procs[0].ready()  # first consumer: the active one
        procs.append(WriterProcess(rabbit_url, mysql_url, tmp_path, "b"))
        await procs[1].ready()
        published: list[str] = []

        async def publish_all() -> None:  # confirmed, 200 awaiting confirms at a time
            for start in range(0, n, 200):
                chunk = [wire(ROOMS[i % 4], ALICE, f"k{i}") for i in range(start, start + 200)]
                await asyncio.gather(*(publish(amqp_bus, key, body) for key, body, _ in chunk))
                published.extend(mid for _, _, mid in chunk)

        publisher = asyncio.get_running_loop().create_task(publish_all())
        await eventually(lambda: count_rows(mysql_engine) >= 1500, what="a first 1500 rows")
        procs[0].kill9()  # the active writer, mid-batch (it writes batches of 50 back to back)
        first = count_rows(mysql_engine)
        await eventually(lambda: count_rows(mysql_engine) >= first + 1500, what="the standby")
        procs[1].kill9()
        second = count_rows(mysql_engine)
        assert second < n, "the writers finished before the kills: make n larger"
        procs.append(WriterProcess(rabbit_url, mysql_url, tmp_path, "c"))  # restart
        await publisher
        await procs[2].ready()
        await eventually(lambda: count_rows(mysql_engine) >= n, timeout=40, what=f"{n} rows")
        await eventually(_drained(amqp_bus), what="the queue drained")
        # what the killed writer had in flight (unacked) came back to the restarted one
        redelivered = await procs[2].metric("chat_history_redelivered_total")
        assert redelivered > 0
    finally:
        for p in procs:
            p.stop()
    stored = message_ids(mysql_engine)
    assert len(stored) == n and sorted(stored) == sorted(published)
    assert await amqp_bus.queue_depth(topology.DEAD_QUEUE) == 0


def close_vhost_connections(vhost: str) -> int:
    """Force-close every client connection of the test's own vhost (the broker stays up)."""
    out = subprocess.run(
        ["rabbitmqctl", "list_connections", "-q", "vhost", "pid"],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    pids = [line.split("\t")[1] for line in out.splitlines() if line.split("\t")[0] == vhost]
    for pid in pids:
        subprocess.run(
            ["rabbitmqctl", "close_connection", pid, "history test: connection drop"],
            check=True,
            capture_output=True,
            timeout=30,
        )
    return len(pids)


async def test_broker_connection_drop_then_resume(rabbit_url: str, mysql_engine: Engine) -> None:
    """The writer's connection is cut mid-stream: it reconnects, re-consumes, and every message
    (those it had in flight come back redelivered) is written once."""
    writer_bus = create_bus(rabbit_url, delivery_limit=5)
    await writer_bus.connect()
    await writer_bus.declare_history(1)
    w = HistoryWriter(settings(history_batch_size=50), writer_bus, mysql_engine)
    sent: list[str] = []
    drops: list[int] = []
    reconnects: list[int] = []

    async def dropped() -> None:
        drops.append(1)

    async def reconnected() -> None:
        reconnects.append(1)

    # counted by the bus's own connection events: polling `connected` can miss a drop that the
    # robust connection mends between two looks
    writer_bus.on_disconnect(dropped)
    writer_bus.on_reconnect(reconnected)

    async def wave(tag: str, n: int) -> None:
        bus = create_bus(rabbit_url)
        await bus.connect()
        await bus.declare_history(1)
        for start in range(0, n, 100):
            chunk = [wire(ROOMS[i % 4], ALICE, f"{tag}{i}") for i in range(start, start + 100)]
            await asyncio.gather(*(publish(bus, key, body) for key, body, _ in chunk))
            sent.extend(mid for _, _, mid in chunk)
        await bus.close()

    try:
        await wave("before", 5000)
        await w.start()
        await eventually(lambda: count_rows(mysql_engine) >= 300, what="writing started")
        assert close_vhost_connections(rabbit_url.rsplit("/", 1)[1]) >= 1
        await eventually(lambda: bool(drops), timeout=30, what="the drop seen")
        await eventually(
            lambda: bool(reconnects) and writer_bus.connected, timeout=30, what="the reconnect"
        )
        await wave("after", 500)
        await eventually(lambda: count_rows(mysql_engine) >= 5500, timeout=30, what="5500 rows")
    finally:
        await w.stop()
        await writer_bus.close()
    assert sorted(message_ids(mysql_engine)) == sorted(sent)
