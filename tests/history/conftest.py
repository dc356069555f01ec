from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from services.common.bus import Bus, create_bus
from services.common.db import make_engine
from services.common.models import Base
from tests.conftest import FAST_ENV
from tests.support import services as svc
from tools.cluster import Cluster

from .helpers import migrate


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def sqlite_engine(tmp_path: object) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path}/history.db")
    Base.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
async def memory_bus() -> AsyncIterator[Bus]:
    bus = create_bus("memory://", delivery_limit=5)
    await bus.connect()
    await bus.declare_history(1)
    yield bus
    await bus.close()


# real RabbitMQ and MariaDB (own vhost, own database: tests/support/services.py) -------------
@pytest.fixture
def rabbit_url() -> Iterator[str]:
    vhost = svc.create_vhost("test_history")
    yield svc.amqp_url(vhost)
    svc.delete_vhost(vhost)


@pytest.fixture
def mysql_url() -> Iterator[str]:
    name = svc.create_database("test_history")
    url = svc.mysql_url(name)
    migrate(url)
    yield url
    svc.drop_database(name)


@pytest.fixture
async def amqp_bus(rabbit_url: str) -> AsyncIterator[Bus]:
    bus = create_bus(rabbit_url, delivery_limit=5)
    await bus.connect()
    await bus.declare_history(1)
    yield bus
    await bus.close()


@pytest.fixture
def sharded_cluster(request: pytest.FixtureRequest) -> Iterator[Cluster]:
    """A scaled cluster of its own (2 gateways, 2 history writers, 4 shards unless the test
    says otherwise with ``@pytest.mark.parametrize("sharded_cluster", [...], indirect=True)``)
    on the local RabbitMQ and MariaDB (own vhost and database)."""
    opts = {"shards": 4, "writers": 2, **getattr(request, "param", {})}
    db = svc.create_database("chat_test_shards")
    vhost = svc.create_vhost("chat_test_shards")
    state = Path(tempfile.mkdtemp(prefix="chat-shards-"))
    c = Cluster(
        database_url=svc.mysql_url(db),
        broker_url=svc.amqp_url(vhost),
        gateways=2,
        writers=int(opts["writers"]),
        state=state,
        extra_env={**FAST_ENV, "CHAT_HISTORY_SHARDS": str(opts["shards"])},
    )
    try:
        try:
            c.start()
        except Exception:
            for log in sorted((state / "logs").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}")
            raise
        yield c
    finally:
        c.stop()
        svc.drop_database(db)
        svc.delete_vhost(vhost)
        shutil.rmtree(state, ignore_errors=True)
