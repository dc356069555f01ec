"""The history target as ``python -m services history`` composes it (services/app.py):
lifespan (bus, revocations, writer), health, readiness, metrics, JSON errors; and
HistoryService.ready() when the database or the broker is away."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import Engine

from services.common import events
from services.common.bus import Bus
from services.common.db import make_engine
from services.common.ids import new_id
from services.common.models import Base
from services.common.tokens import RevocationSet, issue_access
from services.history.service import HistoryService
from tests.support.inprocess import build_app

from .helpers import add_room, count_rows, eventually, publish, settings, wire

ALICE = "u" + "a" * 25
ROOM = "r" + "a" * 25


@pytest.mark.anyio
async def test_create_app_end_to_end_all_in_memory(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    engine = make_engine(url)
    Base.metadata.create_all(engine)
    add_room(engine, ROOM, [(ALICE, "alice")])
    s = settings(target="history", database_url=url, broker_url="memory://", history_shards=1)
    app = build_app(s)
    sid = new_id()
    token, _ = issue_access(s, ALICE, "alice", sid)
    auth = {"Authorization": f"Bearer {token}"}
    transport = httpx.ASGITransport(app=app.state.asgi)  # as served: headers and all
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "ok", "target": "history"}
        assert app.state.gateway is None  # the history target: no gateway, no auth, no web
        assert (await client.get("/readyz")).status_code == 200
        service: HistoryService = app.state.history
        key, body, mid = wire(ROOM, ALICE, "via-app")
        await publish(service.bus, key, body)
        await eventually(lambda: count_rows(engine) == 1, what="the row")
        resp = await client.get(f"/api/history/{ROOM}", headers=auth)
        assert resp.status_code == 200 and [m["id"] for m in resp.json()["messages"]] == [mid]
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        for name in (
            "chat_history_messages_written_total",
            "chat_history_batch_size_bucket",
            "chat_history_write_lag_seconds_bucket",
            "chat_history_dead_letters_total",
            "chat_history_backlog",
            "chat_history_duplicates_total",
        ):
            assert name in metrics.text, name
        missing = await client.get("/nope")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
        # a logout elsewhere reaches this process over the bus: the token dies at once
        await service.bus.publish(*events.session_revoked(sid, ALICE, time.time() + 900))

        async def refused() -> bool:
            return (await client.get(f"/api/history/{ROOM}", headers=auth)).status_code == 401

        await eventually(refused, timeout=5, what="the revocation applied")
    engine.dispose()


@pytest.mark.anyio
async def test_ready_needs_database_and_broker(
    tmp_path: Path, sqlite_engine: Engine, memory_bus: Bus
) -> None:
    ok = HistoryService(settings(), memory_bus, sqlite_engine, RevocationSet())
    assert await ok.ready() is True
    broken = make_engine(f"sqlite:///{tmp_path}/no/such/dir/x.db")
    assert await HistoryService(settings(), memory_bus, broken, RevocationSet()).ready() is False
    await memory_bus.close()
    assert await ok.ready() is False
