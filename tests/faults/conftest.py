"""Fault injection, load and hostile input (issue 9).

- ``fault_env``: a scaled cluster (auth, 3 gateways, history) of its own on a PRIVATE RabbitMQ
  node and a PRIVATE MariaDB started here, so they can be killed, paused and stopped. The broker
  URL asks for a 2 s AMQP heartbeat (``?heartbeat=2``; the services' default is 10 s) so that
  dead-connection detection is measurable in a fast test; the soak uses the default.
- Non-destructive scenarios (authorization, tokens, fuzzing, load) use the shared ``scaled``
  cluster of tests/conftest.py.
- ``@pytest.mark.chaos``: the long soak. Deselected unless CHAT_CHAOS=1 (``make chaos``).
- Every test here is marked ``scaled``: ``make test`` runs them, ``make test-fast`` does not.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import FAST_ENV
from tests.faults.seed import Seeder
from tests.support import services as svc
from tests.support.client import Stack
from tests.support.private_mariadb import PrivateMariaDB
from tests.support.private_rabbit import PrivateRabbit
from tools.cluster import Cluster, wait_http

HEARTBEAT = int(os.environ.get("CHAT_TEST_HEARTBEAT", "2"))
CHAOS = os.environ.get("CHAT_CHAOS", "") not in ("", "0", "false", "no")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "chaos: long fault-injection soak; runs only with CHAT_CHAOS=1 (make chaos)"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:  # the whole fault-injection suite is left to `make test` (not test-fast)
        if here in item.path.parents:
            item.add_marker(pytest.mark.scaled)
    if CHAOS:
        return
    keep, drop = [], []
    for item in items:
        (drop if item.get_closest_marker("chaos") else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@dataclass
class FaultEnv:
    cluster: Cluster
    rabbit: PrivateRabbit
    mariadb: PrivateMariaDB
    database_url: str
    seeder: Seeder
    heartbeat: int

    @property
    def stack(self) -> Stack:
        c = self.cluster
        return Stack("faults", c.auth.url, c.history.url, [g.url for g in c.gateway_procs])

    def gateway_urls(self) -> list[str]:
        return [g.url for g in self.cluster.gateway_procs if g.alive()]

    def services(self) -> dict[str, str]:
        return {p.name: p.url for p in self.cluster.procs}

    def heal(self) -> None:
        """Undo whatever a scenario left behind: everything up, every service ready."""
        if self.rabbit.paused:
            self.rabbit.resume()
        if not self.rabbit.alive():
            self.rabbit.start()
        if self.mariadb.paused:
            self.mariadb.resume()
        if not self.mariadb.alive():
            self.mariadb.start()
        for p in self.cluster.procs:
            if not p.alive():
                p.restart()
        for p in self.cluster.procs:
            wait_http(p.url + "/readyz", 60, p.popen)


def _logs(state: Path) -> str:
    out = []
    for log in sorted((state / "logs").glob("*.log")):
        out.append(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
    return "\n".join(out)


@pytest.fixture(scope="package")
def fault_env() -> Iterator[FaultEnv]:
    rabbit = PrivateRabbit()
    mariadb = PrivateMariaDB()
    state = Path(tempfile.mkdtemp(prefix="chat-faults-"))
    cluster: Cluster | None = None
    try:
        rabbit.start()
        mariadb.install()
        mariadb.start()
        db_url = mariadb.create_database("chat")
        cluster = Cluster(
            database_url=db_url,
            broker_url=rabbit.url(heartbeat=HEARTBEAT),
            gateways=3,
            port=None,
            state=state,
            extra_env={**FAST_ENV, "CHAT_SEND_RATE": "500", "CHAT_SEND_BURST": "500"},
        )
        try:
            cluster.start()
        except Exception:
            print(_logs(state), file=sys.stderr)
            raise
        seeder = Seeder(db_url, cluster.secret)
        env = FaultEnv(cluster, rabbit, mariadb, db_url, seeder, HEARTBEAT)
        yield env
        seeder.close()
    finally:
        if cluster is not None:
            cluster.stop()
        rabbit.cleanup()
        mariadb.cleanup()
        if os.environ.get("CHAT_KEEP_LOGS"):
            print(f"fault cluster logs kept in {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> object:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def faults(fault_env: FaultEnv, request: pytest.FixtureRequest) -> Iterator[FaultEnv]:
    """The fault cluster, healthy at the start of the test and healed after it. After a failed
    test every service is restarted, so a bug's aftermath (e.g. a dead background task in a
    gateway) cannot make the next scenario fail."""
    fault_env.heal()
    yield fault_env
    try:
        rep = getattr(request.node, "rep_call", None)
        if rep is not None and rep.failed:
            for p in fault_env.cluster.procs:
                p.stop()
        fault_env.heal()
    except Exception:
        print(_logs(fault_env.cluster.state), file=sys.stderr)
        raise


@pytest.fixture
def shared_seeder(cluster: Cluster) -> Iterator[Seeder]:
    """Seeding into the shared scaled cluster's database."""
    seeder = Seeder(svc.mysql_url(cluster.extra["database"]), cluster.secret)  # type: ignore[attr-defined]
    yield seeder
    seeder.close()
