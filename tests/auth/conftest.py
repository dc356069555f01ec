"""Fixtures of the auth tests: one test body, two databases (SQLite file and real MariaDB).

- ``backend`` runs every test that uses ``app``/``api`` twice: on a temporary SQLite file and
  on a MariaDB database ``chat_test_auth_<random>`` created (and dropped) for this session.
  The schema is made by running the Alembic migration, never ``metadata.create_all``.
  MariaDB unreachable: the MariaDB half is skipped loudly, or fails when ``CI=true``.
- ``relay``: a real ``OutboxRelay`` on an in-process bus that records what it publishes.
- ``clock``: the app's clock (epoch ms), movable so lockout expiry needs no waiting.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.config import Config
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import delete
from sqlalchemy.engine import Engine

from services.auth import create_app
from services.auth.extensions import db
from services.auth.relay_thread import BackgroundRelay
from services.auth.state import AuthState
from services.common import topology
from services.common.bus import Delivery
from services.common.bus.memory import MemoryBus
from services.common.db import make_engine
from services.common.models import Base
from services.common.settings import ROOT, Settings
from tests.support import services as svc

SECRET = "test-secret-" + "x" * 40
PASSWORD = "correct horse battery"
BACKENDS = svc.BACKENDS


def wait_for(condition: Callable[[], Any], timeout: float = 5.0, interval: float = 0.02) -> Any:
    """Poll ``condition`` until it is truthy (returned) or the deadline passes (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


def run_migrations(url: str) -> None:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


# --- databases ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def mariadb_url() -> Iterator[str]:
    """A database ``chat_test_auth_<random>`` of the shared MariaDB, dropped at the end.
    Unreachable: skipped loudly, or a failure with CI=true (tests/support/services.py)."""
    name = svc.create_database("chat_test_auth")
    try:
        yield svc.mysql_url(name)
    finally:
        svc.drop_database(name)


@pytest.fixture(scope="session", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@dataclass
class Database:
    backend: str
    url: str
    engine: Engine

    def clean(self) -> None:
        with self.engine.begin() as conn:
            for table in reversed(Base.metadata.sorted_tables):
                conn.execute(delete(table))


@pytest.fixture(scope="session")
def _database_cache() -> Iterator[dict[str, Database]]:
    cache: dict[str, Database] = {}
    yield cache
    for database in cache.values():
        database.engine.dispose()


@pytest.fixture
def database(
    backend: str,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _database_cache: dict[str, Database],
) -> Database:
    """The backend's database, migrated once per session and emptied before each test."""
    if backend not in _database_cache:
        if backend == "sqlite":
            url = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'auth.db'}"
        else:
            url = request.getfixturevalue("mariadb_url")
        run_migrations(url)
        _database_cache[backend] = Database(backend, url, make_engine(url))
    database = _database_cache[backend]
    database.clean()
    return database


# --- the app --------------------------------------------------------------------------------


class FakeClock:
    """Epoch milliseconds that tests move forward."""

    def __init__(self) -> None:
        self.now = int(time.time() * 1000)

    def __call__(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def fast_settings(url: str, **overrides: Any) -> Settings:
    """Test settings: cheap argon2 (one test checks the production defaults)."""
    base = Settings(
        database_url=url,
        broker_url="memory://",
        jwt_secret=SECRET,
        argon2_time_cost=1,
        argon2_memory_kib=256,
        argon2_parallelism=1,
        log_json=False,
        register_per_ip_hour=1_000_000,  # every test registers from one address
    )
    return replace(base, **overrides)


@pytest.fixture
def settings(database: Database) -> Settings:
    return fast_settings(database.url)


class RecordingBus(MemoryBus):
    """The in-process bus, remembering every publish in order (thread-safe to read)."""

    def __init__(self) -> None:
        super().__init__("memory://")
        self.published: list[tuple[str, str, dict[str, Any]]] = []
        self.fail = False
        self.delay = 0.0  # a slow broker: seconds before each publish is confirmed
        self._lock = threading.Lock()

    async def publish(self, exchange: str, routing_key: str, body: bytes, **kwargs: Any) -> None:
        if self.fail:
            from services.common.bus import PublishError

            raise PublishError("broker down (test)")
        if self.delay:
            await asyncio.sleep(self.delay)
        await super().publish(exchange, routing_key, body, **kwargs)
        with self._lock:
            self.published.append((exchange, routing_key, orjson.loads(body)))

    async def connect(self) -> None:
        """Connected, with one history shard and a stand-in for its writer (it acks every
        entry): notices, which the relay publishes persistent and mandatory, are confirmed."""
        await super().connect()
        await self.declare_history(1)
        await self.consume(topology.history_queue(0), self._store, prefetch=100)

    async def _store(self, delivery: Delivery) -> None:
        await delivery.ack()

    def notices(self) -> list[dict[str, Any]]:
        """The notices relayed to history, in order (their message objects)."""
        with self._lock:
            return [
                body["message"]
                for _, key, body in self.published
                if topology.is_history_entry_key(key) and body["message"].get("kind") == "notice"
            ]

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            bodies = [body for _, _, body in self.published]
        return [b for b in bodies if kind is None or b.get("type") == kind]


@dataclass
class Relay:
    background: BackgroundRelay
    bus: RecordingBus
    engine: Engine
    calls: list[str] = field(default_factory=list)


@pytest.fixture
def relay(database: Database) -> Iterator[Relay]:
    bus = RecordingBus()
    engine = make_engine(database.url)
    background = BackgroundRelay(lambda: engine, lambda: bus, poll_interval=0.2)
    background.ensure_started()
    try:
        yield Relay(background, bus, engine)
    finally:
        background.stop()
        engine.dispose()


def dispose(app: Flask) -> None:
    with app.app_context():
        db.engine.dispose()


@pytest.fixture
def app(settings: Settings, relay: Relay, clock: FakeClock) -> Iterator[Flask]:
    application = create_app(settings, relay=relay.background.ensure_started(), clock=clock)
    try:
        yield application
    finally:
        dispose(application)


def auth_state(app: Flask) -> AuthState:
    state = app.extensions["chat_auth"]
    assert isinstance(state, AuthState)
    return state


class Api:
    """A test client with the calls tests make all the time."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.client: FlaskClient = app.test_client()

    def post(self, path: str, body: Any = None, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            kw["json"] = body
        return self.client.post(path, headers=headers, **kw)

    def get(self, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.get(path, headers=headers, **kw)

    def patch(self, path: str, body: Any = None, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if body is not None:
            kw["json"] = body
        return self.client.patch(path, headers=headers, **kw)

    def delete(self, path: str, token: str | None = None, **kw: Any) -> Any:
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return self.client.delete(path, headers=headers, **kw)

    def register(self, username: str, password: str = PASSWORD) -> Any:
        return self.post("/api/auth/register", {"username": username, "password": password})

    def login(self, username: str, password: str = PASSWORD, **kw: Any) -> Any:
        return self.post("/api/auth/login", {"username": username, "password": password}, **kw)

    def user(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        """Register and log in: the token pair plus ``id`` and ``username``."""
        created = self.register(username, password)
        assert created.status_code == 201, created.get_json()
        tokens = self.login(username, password)
        assert tokens.status_code == 200, tokens.get_json()
        return {**tokens.get_json(), **created.get_json()}


@pytest.fixture
def api(app: Flask) -> Api:
    return Api(app)


def error_code(response: Any) -> str:
    body = response.get_json()
    assert isinstance(body, dict) and set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return str(body["error"]["code"])
