"""Fixtures that start the real system: the all-in-one process, and the scaled mode (gunicorn
auth, uvicorn gateways and history on real RabbitMQ and MariaDB, own vhost and database)."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis.configuration import set_hypothesis_home_dir

from tests.support import services as svc
from tests.support.allinone import AllInOne
from tests.support.client import Stack
from tests.support.private_rabbit_cluster import (  # noqa: F401  (fixtures for every test)
    rabbit_cluster,
    rabbit_cluster_module,
)
from tools.cluster import Cluster, Proc, free_port

# Tests write only to temporary directories: Hypothesis (under schemathesis) would keep its
# caches in .hypothesis/ of the working directory.
HYPOTHESIS_HOME = Path(tempfile.mkdtemp(prefix="chat-hypothesis-"))
set_hypothesis_home_dir(str(HYPOTHESIS_HOME))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    shutil.rmtree(HYPOTHESIS_HOME, ignore_errors=True)


FAST_ENV = {
    "CHAT_PRESENCE_HEARTBEAT": "1",
    "CHAT_PRESENCE_TIMEOUT": "4",
    "CHAT_ARGON2_TIME_COST": "2",
    "CHAT_ARGON2_MEMORY_KIB": "19456",
    "CHAT_LOG_LEVEL": "WARNING",
    "CHAT_SEND_RATE": "200",
    "CHAT_SEND_BURST": "100",
    "CHAT_SEND_QUEUE_MAX": "300",
    "CHAT_REGISTER_PER_IP_HOUR": "1000000",  # every test registers from 127.0.0.1
}


# The scaled mode's infrastructure. A test that needs any of these fixtures (directly or through
# another fixture) is marked `scaled` at collection: `make test` runs it, `make test-fast` not.
SCALED_FIXTURES = frozenset(
    {
        "cluster",  # gunicorn auth, uvicorn gateways and history on RabbitMQ and MariaDB
        "rabbit_vhost",
        "mysql_database",
        "mariadb_url",  # tests/auth: the shared MariaDB
        "rabbit_url",  # tests/history: the shared RabbitMQ and MariaDB
        "mysql_url",
        "fault_env",  # tests/faults: private RabbitMQ and MariaDB nodes
        "rabbit_cluster_module",  # a private 3-node RabbitMQ cluster
        "sharded_cluster",  # tests/history: a cluster with several history writers
    }
)


# Every collected test, before -m/-k deselect any: tests/test_selection.py checks the markers.
COLLECTED = pytest.StashKey[list[pytest.Item]]()


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SCALED_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.scaled)
    config.stash[COLLECTED] = list(items)
    # `make test` runs two pytest-xdist workers, each given whole files in this order (the
    # Makefile turns off xdist's own reorder, by number of tests): the longest files first,
    # so that none of them is left to run alone at the end
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))


# the files that take longest, longest first (`pytest --durations=60` on 2026-11-29, one
# worker: the benchmark smoke run 109 s, the broker faults 60 s, ... the last here ~10 s)
LONGEST_FIRST = (
    "tests/bench/test_bench_smoke.py",
    "tests/faults/test_broker.py",
    "tests/browser/test_chat_browser.py",
    "tests/faults/test_rabbit_cluster.py",
    "tests/browser/test_team_browser.py",
    "tests/auth/test_schemathesis.py",
    "tests/gateway/test_scaled.py",
    "tests/browser/test_messages_browser.py",
    "tests/support/test_private_rabbit_cluster.py",
    "tests/gateway/test_big_rooms.py",
    "tests/faults/test_bruteforce.py",
    "tests/gateway/test_outage.py",
    "tests/history/test_reshard.py",
    "tests/history/test_writer_real.py",
    "tests/faults/test_fuzz.py",
    "tests/faults/test_load.py",
    "tests/faults/test_processes.py",
    "tests/faults/test_database.py",
    "tests/history/test_shards.py",
    "tests/faults/test_broker_connect.py",
    "tests/deploy/test_rabbitmq_config.py",
)


@pytest.fixture(scope="session")
def allinone() -> Iterator[Stack]:
    tmp = Path(tempfile.mkdtemp(prefix="chat-aio-"))
    server = AllInOne(tmp, FAST_ENV).start()
    yield server.stack()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    vhost = svc.create_vhost()
    yield vhost
    svc.delete_vhost(vhost)


@pytest.fixture(scope="session")
def mysql_database() -> Iterator[str]:
    name = svc.create_database()
    yield name
    svc.drop_database(name)


def nginx_available() -> bool:
    return os.path.exists("/usr/sbin/nginx")


@pytest.fixture(scope="session")
def cluster(rabbit_vhost: str, mysql_database: str) -> Iterator[Cluster]:
    """The scaled mode: 3 gateways, auth, history; behind nginx when it is installed."""
    port = free_port() if nginx_available() else None
    state = Path(tempfile.mkdtemp(prefix="chat-cluster-"))
    c = Cluster(
        database_url=svc.mysql_url(mysql_database),
        broker_url=svc.amqp_url(rabbit_vhost),
        gateways=3,
        port=port,
        state=state,
        extra_env=dict(FAST_ENV),
    )
    try:
        c.start()
    except Exception:
        c.stop()
        for log in (state / "logs").glob("*.log"):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}", file=sys.stderr)
        raise
    c.extra = {"database": mysql_database, "vhost": rabbit_vhost}  # type: ignore[attr-defined]
    yield c
    c.stop()
    shutil.rmtree(state, ignore_errors=True)


def cluster_stack(c: Cluster) -> Stack:
    return Stack(
        "scaled",
        c.auth.url,
        c.history.url,
        [g.url for g in c.gateway_procs if g.alive()],
        base_url=c.base_url if c.port else None,
        extra={"cluster": c, "secret": c.secret, "database_url": c.database_url},
    )


@pytest.fixture(scope="session")
def scaled(cluster: Cluster) -> Stack:
    return cluster_stack(cluster)


@pytest.fixture(params=["allinone", pytest.param("scaled", marks=pytest.mark.scaled)])
def stack(request: pytest.FixtureRequest) -> Stack:
    """One test body, both run modes (the scaled half is marked `scaled`: `make test-fast`
    runs the all-in-one half only)."""
    if request.param == "allinone":
        return request.getfixturevalue("allinone")  # type: ignore[no-any-return]
    c: Cluster = request.getfixturevalue("cluster")
    return cluster_stack(c)


@pytest.fixture(scope="session")
def cluster_url(cluster: Cluster) -> str:
    """The scaled mode behind nginx (browser tests)."""
    if cluster.port is None:
        svc.missing("nginx is not installed (run `make setup-system`)")
    return cluster.base_url


@pytest.fixture
def kill_gateway(cluster: Cluster) -> Iterator[Callable[[str | None], str]]:
    """kill -9 one gateway (the one named, else the first alive); restarted after the test."""
    killed: list[Proc] = []

    def kill(gateway_id: str | None = None) -> str:
        procs = [g for g in cluster.gateway_procs if g.alive()]
        target = next((g for g in procs if g.env.get("CHAT_GATEWAY_ID") == gateway_id), procs[0])
        target.signal(signal.SIGKILL)
        assert target.popen is not None
        target.popen.wait(10)
        killed.append(target)
        return target.env["CHAT_GATEWAY_ID"]

    yield kill
    for g in killed:
        g.restart()
