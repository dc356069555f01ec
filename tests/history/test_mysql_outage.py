"""MySQL unavailable: a PRIVATE MariaDB instance (own datadir, socket and port, started and
stopped by this test; the shared one is never touched) is paused (SIGSTOP: a hung server, the
writer's socket timeouts fire) and then shut down and restarted (connection refused) while
messages keep coming. The writer keeps the batch unacked, backs off, retries, and every
message is present exactly once after the database returns; the sync marker is answered only
then."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from services.common import topology
from services.common.bus import Bus, Delivery
from services.history import metrics
from services.history.store import history_engine
from services.history.writer import HistoryWriter
from tests.support import services as svc
from tools.cluster import free_port

from .helpers import (
    count_rows,
    eventually,
    marker,
    message_ids,
    migrate,
    publish,
    settings,
    wire,
)

pytestmark = pytest.mark.anyio

ROOM = "r" + "o" * 25
ALICE = "u" + "a" * 25


class PrivateMariaDB:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.datadir = base / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"mysql://root@127.0.0.1:{self.port}/chat"

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def install(self) -> None:
        subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                shutil.which("mariadbd") or "/usr/sbin/mariadbd",
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.base / 'sock'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.base / 'pid'}",
                f"--log-error={self.base / 'error.log'}",
                "--innodb-buffer-pool-size=32M",
                "--skip-log-bin",
                *self._user(),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    async def wait_up(self) -> None:
        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, self.error_log()
            if not svc.port_open("127.0.0.1", self.port):
                return False
            admin = create_engine(f"mysql+pymysql://root@127.0.0.1:{self.port}/")
            try:
                with admin.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return True
            except Exception:
                return False
            finally:
                admin.dispose()

        await eventually(up, timeout=30, what="the private MariaDB")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def shutdown(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def error_log(self) -> str:
        path = self.base / "error.log"
        return path.read_text()[-2000:] if path.exists() else ""


@pytest.fixture
def private_mariadb(tmp_path: Path) -> Iterator[PrivateMariaDB]:
    if shutil.which("mariadb-install-db") is None or not (
        shutil.which("mariadbd") or Path("/usr/sbin/mariadbd").exists()
    ):
        svc.missing("private MariaDB: mariadb-install-db / mariadbd are not installed")
    db = PrivateMariaDB(tmp_path / "mariadb")
    db.base.mkdir()
    try:
        db.install()
    except Exception as exc:
        svc.missing(f"private MariaDB: mariadb-install-db failed: {exc}")
    db.start()
    yield db
    db.shutdown()


def total(metric: Any) -> float:
    return sum(s.value for f in metric.collect() for s in f.samples if s.name.endswith("_total"))


async def test_mysql_outage_loses_nothing(private_mariadb: PrivateMariaDB, amqp_bus: Bus) -> None:
    db = private_mariadb
    await db.wait_up()
    admin = create_engine(f"mysql+pymysql://root@127.0.0.1:{db.port}/")
    with admin.begin() as conn:
        conn.execute(text("CREATE DATABASE chat CHARACTER SET utf8mb4"))
    admin.dispose()
    migrate(db.url)
    engine: Engine = history_engine(db.url, io_timeout=2)

    answers: list[str] = []

    async def on_event(delivery: Delivery) -> None:
        answers.append(orjson.loads(delivery.body)["marker"])

    await amqp_bus.private_queue("outage-gw-events", on_event)
    await amqp_bus.bind("outage-gw-events", topology.EVENTS, topology.gateway_key("gw-o"))

    sent: list[str] = []

    async def wave(name: str, n: int) -> None:
        for i in range(n):
            key, body, mid = wire(ROOM, ALICE, f"{name}-{i}")
            await publish(amqp_bus, key, body)
            sent.append(mid)

    w = HistoryWriter(settings(history_batch_size=50), amqp_bus, engine, max_backoff=0.5)
    await w.start()
    try:
        await wave("before", 300)
        await eventually(lambda: count_rows(engine) == 300, what="the first wave")

        # 1. a hung server: SIGSTOP, messages and a marker keep coming
        retries = total(metrics.DB_RETRIES)
        db.signal(signal.SIGSTOP)
        await wave("paused", 300)
        await publish(amqp_bus, *marker("mk-paused", "gw-o"))
        await eventually(lambda: total(metrics.DB_RETRIES) > retries, what="timeouts, retries")
        assert answers == [], "marker answered while its messages could not be committed"
        db.signal(signal.SIGCONT)
        await eventually(lambda: count_rows(engine) == 600, timeout=30, what="the second wave")
        await eventually(lambda: answers == ["mk-paused"], what="the marker answered")

        # 2. the server goes away (connection refused) and comes back on the same datadir
        retries = total(metrics.DB_RETRIES)
        db.shutdown()
        await wave("down", 300)
        await eventually(lambda: total(metrics.DB_RETRIES) > retries + 2, what="refused, retries")
        db.start()
        await db.wait_up()
        await eventually(lambda: count_rows(engine) == 900, timeout=30, what="the third wave")
    finally:
        await w.stop()
    stored = message_ids(engine)
    engine.dispose()
    assert len(stored) == 900 and sorted(stored) == sorted(sent)
    assert await amqp_bus.queue_depth(topology.DEAD_QUEUE) == 0
