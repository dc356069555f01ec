"""Keep a process's RevocationSet true: load recent revocations at start, then follow the bus."""

from __future__ import annotations

import asyncio
import logging
import time

import orjson
from sqlalchemy import select
from sqlalchemy.engine import Engine

from services.common import topology
from services.common.bus import Bus, Delivery
from services.common.models import Session
from services.common.tokens import RevocationSet

log = logging.getLogger("chat.revocations")


def load_revoked(engine: Engine, revoked: RevocationSet, access_ttl: int) -> int:
    """Sessions revoked recently enough that one of their access tokens may still be unexpired."""
    since_ms = int((time.time() - access_ttl - 60) * 1000)
    with engine.connect() as conn:
        rows = conn.execute(
            select(Session.id, Session.revoked_ms).where(Session.revoked_ms >= since_ms)
        ).all()
    for sid, revoked_ms in rows:
        revoked.add(sid, revoked_ms / 1000 + access_ttl + 60)
    return len(rows)


async def follow_revocations(
    bus: Bus, engine: Engine, revoked: RevocationSet, queue: str, access_ttl: int
) -> None:
    """Bind a private queue to ``session.revoked``; reload from the database after a reconnect
    (events published while this process was cut off from the broker were not seen)."""

    async def handle(delivery: Delivery) -> None:
        try:
            event = orjson.loads(delivery.body)
            revoked.add(str(event["sid"]), float(event["until"]))
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring malformed revocation event")

    await bus.private_queue(queue, handle)
    await bus.bind(queue, topology.EVENTS, topology.SESSION_REVOKED)
    await asyncio.to_thread(load_revoked, engine, revoked, access_ttl)

    async def reload() -> None:
        await asyncio.to_thread(load_revoked, engine, revoked, access_ttl)

    bus.on_reconnect(reload)
