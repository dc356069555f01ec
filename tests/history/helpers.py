"""Helpers shared by the history tests: wire messages, waiting on conditions, rooms. Real
RabbitMQ vhosts and MariaDB databases come from tests/support/services.py (tools/scratch.py)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from services.common import topology
from services.common.bus import Bus
from services.common.bus.memory import MemoryBus
from services.common.ids import iso_ms, message_id, now_ms
from services.common.models import Membership, Message, Room, User
from services.common.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
SECRET = "history-tests-" + "s" * 40


@contextlib.contextmanager
def history_engine_for(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """The engine of a ``svc.BACKENDS`` parameter: the SQLite fixture, or a migrated MariaDB
    database of its own (with the history service's engine options)."""
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_engine")
        return
    from services.history.store import history_engine

    eng = history_engine(request.getfixturevalue("mysql_url"))
    try:
        yield eng
    finally:
        eng.dispose()


def migrate(url: str) -> None:
    """The production schema (alembic, migrations/): InnoDB, utf8mb4_bin, the real indexes."""
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "jwt_secret": SECRET,
        "history_batch_size": 50,
        "history_batch_ms": 5,
        "gateway_id": "hist-test",
        "shutdown_grace": 2.0,
    }
    values.update(overrides)
    return Settings(**values)


def wire(
    room_id: str,
    sender_id: str,
    client_msg_id: str,
    *,
    body: str = "hello",
    sender: str = "alice",
    sent_ms: int | None = None,
) -> tuple[str, bytes, str]:
    """(routing key, body, message id) of a message as a gateway publishes it."""
    mid = message_id(sender_id, client_msg_id)
    sent_ms = now_ms() if sent_ms is None else sent_ms
    doc = {
        "type": "message",
        "message": {
            "id": mid,
            "room": room_id,
            "sender": sender,
            "body": body,
            "sent_at": iso_ms(sent_ms),
            "client_msg_id": client_msg_id,
        },
        "sender_id": sender_id,
        "sent_ms": sent_ms,
        "origin": {"gw": "test-gw", "conn": "c1"},
    }
    return topology.room_msg_key(room_id, 1), orjson.dumps(doc), mid


def message_doc(key_body: tuple[str, bytes, str]) -> dict[str, Any]:
    """The entry of a ``wire(...)`` message (to put in a batch)."""
    doc: dict[str, Any] = orjson.loads(key_body[1])
    return doc


def change_doc(
    kind: str,
    room_id: str,
    message_id: str,
    actor_id: str,
    client_msg_id: str,
    *,
    body: str | None = None,
    at_ms: int | None = None,
) -> dict[str, Any]:
    """An edit or delete entry as a gateway publishes it (events.edit_entry/delete_entry)."""
    from services.common import events

    at = now_ms() if at_ms is None else at_ms
    msg = {
        "id": message_id,
        "room": room_id,
        "sender": "alice",
        "body": body,
        "sent_at": iso_ms(at),
        "client_msg_id": "x",
        "kind": "text",
        "edited_at": iso_ms(at) if kind == "edit" else None,
        "deleted": kind == "delete",
    }
    make = events.edit_entry if kind == "edit" else events.delete_entry
    return make(msg, actor_id, client_msg_id, at, {"gw": "test-gw", "conn": "c1"})


def single(doc: dict[str, Any]) -> tuple[str, bytes]:
    """(routing key, body) of one entry published alone on its room's key."""
    return topology.room_msg_key(doc["message"]["room"], 1), orjson.dumps(doc)


def batch(docs: list[dict[str, Any]], shard: int = 0) -> tuple[str, bytes]:
    """(routing key, body) of a gateway's batch for one shard."""
    return topology.history_batch_key(shard), orjson.dumps({"type": "batch", "messages": docs})


def marker(marker_id: str, gw: str) -> tuple[str, bytes]:
    return topology.sync_key(0), orjson.dumps({"type": "marker", "marker": marker_id, "gw": gw})


_in_flight: set[asyncio.Future[None]] = set()


async def publish(bus: Bus, key: str, body: bytes) -> None:
    """Publish as a gateway does. The in-process bus confirms such a publish only once the
    writer has committed it (ack = on disk): there, the message is queued and the confirm is
    not waited for, so a test can fill the queue before a writer runs."""
    coro = bus.publish(topology.MESSAGES, key, body, mandatory=True, persistent=True)
    if not isinstance(bus, MemoryBus):
        await coro
        return
    task = asyncio.ensure_future(coro)
    _in_flight.add(task)
    task.add_done_callback(_settled)
    await asyncio.sleep(0)  # the task queues the message now, in call order


def _settled(task: asyncio.Future[None]) -> None:
    _in_flight.discard(task)
    if not task.cancelled():
        task.exception()  # retrieved: a confirm that timed out is no error here


async def eventually(
    check: Callable[[], Any | Awaitable[Any]], timeout: float = 15.0, what: str = "condition"
) -> Any:
    """Poll ``check`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = check()
        if asyncio.iscoroutine(last):
            last = await last
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(0.02)


def count_rows(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(select(func.count()).select_from(Message)) or 0)


def message_ids(engine: Engine) -> list[str]:
    with engine.connect() as conn:
        return list(conn.scalars(select(Message.id)))


def add_room(
    engine: Engine,
    room_id: str,
    members: list[tuple[str, str]],
    kind: str = "group",
    owner: str | None = None,
) -> None:
    """A room with members [(user_id, username)] (users created if missing)."""
    with engine.begin() as conn:
        for user_id, username in members:
            exists = conn.scalar(select(User.id).where(User.id == user_id))
            if exists is None:
                conn.execute(
                    User.__table__.insert().values(
                        id=user_id, username=username, password_hash="x", created_ms=0
                    )
                )
        conn.execute(
            Room.__table__.insert().values(
                id=room_id,
                kind=kind,
                name="r",
                owner_id=owner,
                direct_key=None,
                created_ms=0,
                last_activity_ms=0,
                version=1,
                member_count=len(members),
            )
        )
        for user_id, username in members:
            conn.execute(
                Membership.__table__.insert().values(
                    room_id=room_id, user_id=user_id, username=username, joined_ms=0
                )
            )
