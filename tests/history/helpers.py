"""Helpers shared by the history tests: wire messages, waiting on conditions, rooms. Real
RabbitMQ vhosts and MariaDB databases come from tests/support/services.py (tools/scratch.py)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
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
    engine: Engine, room_id: str, members: list[tuple[str, str]], kind: str = "group"
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
                owner_id=None,
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
