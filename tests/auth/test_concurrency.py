"""Races through a real concurrent HTTP server: a threaded werkzeug server on SQLite, and
gunicorn (2 workers x 8 threads, relay threads on real RabbitMQ) on MariaDB."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from werkzeug.serving import make_server

from services.auth import create_app
from services.common import topology
from services.common.bus import Delivery, create_bus
from services.common.db import make_engine
from services.common.models import Membership, Outbox, Room, User
from services.common.settings import ROOT
from tests.auth.conftest import (
    PASSWORD,
    SECRET,
    Database,
    FakeClock,
    Relay,
    dispose,
    fast_settings,
    run_migrations,
)
from tests.support import services as svc
from tools.cluster import free_port, wait_http

THREADS = 20
ACCOUNT_LIMIT = 5

LIVE_ENV = {
    "CHAT_JWT_SECRET": SECRET,
    "CHAT_ARGON2_TIME_COST": "1",
    "CHAT_ARGON2_MEMORY_KIB": "256",
    "CHAT_LOGIN_FAIL_PER_ACCOUNT_HOUR": str(ACCOUNT_LIMIT),
    "CHAT_LOGIN_FAIL_PER_ACCOUNT_IP_MINUTE": "1000",
    "CHAT_LOGIN_FAIL_ACCOUNTS_PER_IP_HOUR": "1000",
    "CHAT_REGISTER_PER_IP_HOUR": "1000000",
    "CHAT_LOG_LEVEL": "WARNING",
}


@pytest.fixture(scope="module")
def auth_vhost() -> Iterator[str]:
    vhost = svc.create_vhost("chat_test_auth")
    yield vhost
    svc.delete_vhost(vhost)


@pytest.fixture(scope="module")
def gunicorn_url(mariadb_url: str, auth_vhost: str) -> Iterator[str]:
    """The auth service as deployed: gunicorn with the project's config, on MariaDB and
    RabbitMQ. The schema comes from the `database` fixture's migration."""
    run_migrations(mariadb_url)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(LIVE_ENV)
    env.update(
        CHAT_DATABASE_URL=mariadb_url,
        CHAT_BROKER_URL=svc.amqp_url(auth_vhost),
        CHAT_TARGET="auth",
    )
    log = Path(tempfile.mkstemp(prefix="auth-gunicorn-", suffix=".log")[1])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gunicorn",
                "-c",
                "python:services.auth.gunicorn_conf",
                "-w",
                "2",
                "--threads",
                "8",
                "-b",
                f"127.0.0.1:{port}",
                "services.auth:create_app()",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(url + "/readyz", 60, proc)  # ready = database and broker connected
        yield url
    except Exception:
        print(log.read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.unlink(missing_ok=True)


@pytest.fixture
def live(
    backend: str, database: Database, relay: Relay, request: pytest.FixtureRequest
) -> Iterator[str]:
    if backend == "mariadb":
        yield request.getfixturevalue("gunicorn_url")
        return
    settings = fast_settings(
        database.url,
        login_fail_per_account_hour=ACCOUNT_LIMIT,
        login_fail_per_account_ip_minute=1000,
        login_fail_accounts_per_ip_hour=1000,
    )
    app = create_app(settings, relay=relay.background.ensure_started(), clock=FakeClock())
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.shutdown()
        thread.join(10)
        dispose(app)


def race(n: int, call: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """Run ``call`` from n threads released at the same instant."""
    barrier = threading.Barrier(n)

    def one(i: int) -> httpx.Response:
        with httpx.Client(timeout=60) as client:
            barrier.wait(30)
            return call(client, i)

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def register(url: str, username: str) -> dict[str, Any]:
    r = httpx.post(f"{url}/api/auth/register", json={"username": username, "password": PASSWORD})
    assert r.status_code == 201, r.text
    t = httpx.post(f"{url}/api/auth/login", json={"username": username, "password": PASSWORD})
    assert t.status_code == 200, t.text
    return {**r.json(), **t.json()}


def test_concurrent_registration_of_one_name(live: str, database: Database) -> None:
    results = race(
        THREADS,
        lambda c, i: c.post(
            f"{live}/api/auth/register",
            json={"username": "Racer" if i % 2 else "racer", "password": PASSWORD},
        ),
    )
    statuses = sorted(r.status_code for r in results)
    assert statuses == [201] + [409] * (THREADS - 1), statuses
    assert all(
        r.json()["error"]["code"] == "username_taken" for r in results if r.status_code == 409
    )
    with database.engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(User).where(User.username == "racer"))
        assert n.scalar_one() == 1


def test_concurrent_direct_room_from_both_sides(live: str, database: Database) -> None:
    alice, bob = register(live, "alice"), register(live, "bob")

    def create(client: httpx.Client, i: int) -> httpx.Response:
        me, other = (alice, "bob") if i % 2 else (bob, "alice")
        return client.post(
            f"{live}/api/rooms/direct",
            json={"username": other},
            headers={"Authorization": f"Bearer {me['access_token']}"},
        )

    results = race(THREADS, create)
    assert [r.status_code for r in results] == [200] * THREADS, [r.text for r in results]
    assert len({r.json()["id"] for r in results}) == 1
    assert results[0].json()["members"] == ["alice", "bob"]
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Room)).scalar_one() == 1
        assert conn.execute(select(func.count()).select_from(Membership)).scalar_one() == 2


def test_concurrent_failed_logins_never_exceed_the_limit(live: str) -> None:
    register(live, "alice")
    results = race(
        THREADS,
        lambda c, i: c.post(
            f"{live}/api/auth/login", json={"username": "alice", "password": "wrong password"}
        ),
    )
    statuses = [r.status_code for r in results]
    assert set(statuses) <= {401, 429}
    assert 1 <= statuses.count(401) <= ACCOUNT_LIMIT, statuses
    assert all("Retry-After" in r.headers for r in results if r.status_code == 429)


def test_logout_is_on_rabbitmq_before_the_204(
    mariadb_url: str, gunicorn_url: str, auth_vhost: str
) -> None:
    """Through gunicorn on MariaDB and RabbitMQ (SQLite + memory bus: test_tokens.py): the
    worker's relay thread has published (confirmed) and deleted the outbox row by the time the
    204 arrives, and a subscriber receives the event."""
    user = register(gunicorn_url, f"logout_{secrets.token_hex(4)}")
    engine = make_engine(mariadb_url)
    got: list[dict[str, Any]] = []

    async def scenario() -> None:
        bus = create_bus(svc.amqp_url(auth_vhost))
        await bus.connect()
        try:

            async def on_event(delivery: Delivery) -> None:
                got.append(orjson.loads(delivery.body))

            await bus.private_queue("test.auth.revocations", on_event)
            await bus.bind("test.auth.revocations", topology.EVENTS, topology.SESSION_REVOKED)
            r = await asyncio.to_thread(
                httpx.post,
                f"{gunicorn_url}/api/auth/logout",
                headers={"Authorization": f"Bearer {user['access_token']}"},
            )
            assert r.status_code == 204
            with engine.connect() as conn:  # relayed and confirmed already
                assert conn.execute(select(func.count()).select_from(Outbox)).scalar_one() == 0
            for _ in range(200):
                if got:
                    break
                await asyncio.sleep(0.01)
        finally:
            await bus.close()

    try:
        asyncio.run(scenario())
    finally:
        engine.dispose()
    assert [e["type"] for e in got] == ["session_revoked"]
    assert got[0]["user_id"] == user["id"]
    r = httpx.get(
        f"{gunicorn_url}/api/auth/me", headers={"Authorization": f"Bearer {user['access_token']}"}
    )
    assert r.status_code == 401
