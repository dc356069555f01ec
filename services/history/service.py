"""The history service as one object, so the all-in-one app and the scaled process mount the
same thing: ``routes`` for ``/api/history/...``, ``start()``/``stop()`` for the writer,
``ready()`` for ``/readyz``."""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy import text
from sqlalchemy.engine import Engine
from starlette.routing import BaseRoute

from services.common.bus import Bus
from services.common.settings import Settings
from services.common.tokens import RevocationSet
from services.history.api import HistoryAPI
from services.history.shards import ShardedWriters

log = logging.getLogger("chat.history")


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


class HistoryService:
    def __init__(
        self, settings: Settings, bus: Bus, engine: Engine, revoked: RevocationSet
    ) -> None:
        self.settings = settings
        self.bus = bus
        self.engine = engine
        self.writers = ShardedWriters(settings, bus, engine)
        self.api = HistoryAPI(settings, engine, revoked)
        self.routes: list[BaseRoute] = list(self.api.routes)

    async def start(self) -> None:
        """Start the writer (the bus must be connected)."""
        await self.writers.start()

    async def stop(self) -> None:
        await self.writers.stop()

    async def ready(self) -> bool:
        """The database answers and the broker connection is up."""
        if not self.bus.connected:
            return False
        try:
            await asyncio.wait_for(asyncio.to_thread(ping, self.engine), 5)
        except Exception as exc:
            log.warning("database not ready: %s", str(exc).splitlines()[0][:200])
            return False
        return True
