"""History entries (messages, edits, deletes) whose publish got no clear answer (RELIABILITY.md
F11).

A batch whose confirm does not come (a timeout, the broker connection lost with it in flight) is
answered ``unavailable``, yet the broker may have routed it: history then holds the messages,
the other gateways got their live copies with it, but this gateway's own members did not (they
get a message once its batch is confirmed, publisher.py) and its own live copy died with the
connection's queue. A member here whose cursor is already past the message (a message another
gateway stamped later reached it first) cannot find it by a catch-up either: history is read
after the cursor (and a catch-up never brings an edit as a ``message_changed``). So each such
entry is kept here until it is settled:

- once the broker is back and the writer of its shard has committed everything routed before
  now (a sync marker), it is looked up in history; if there, it is delivered to the members
  here and its live copy is published again (every gateway delivers a message id, and a
  change id, once: the gateways that had it ignore the copy); if not, it never reached the
  broker and the sender's retry publishes it;
- a retry that finds its entry in history settles it at once the same way.

Bounded: at most ``MAX_PENDING`` messages (the oldest dropped first) and ``GIVE_UP_AFTER``
seconds of trying (a writer or a database down that long: the members' next resync is the rest
of the answer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from services.common import topology
from services.common.bus import Bus, PublishError
from services.common.ids import change_id, parse_ms
from services.gateway.store import GatewayStore
from services.gateway.sync import SyncMarkers

log = logging.getLogger("chat.gateway.doubts")

MAX_PENDING = 10_000
GIVE_UP_AFTER = 300.0  # seconds
RETRY_EVERY = 1.0  # seconds between attempts while the broker, a writer or the database is away


class Doubts:
    def __init__(
        self,
        bus: Bus,
        store: GatewayStore,
        markers: SyncMarkers,
        shards: Callable[[], int],
        deliver_local: Callable[[dict[str, Any]], None],
    ) -> None:
        self.bus = bus
        self.store = store
        self.markers = markers
        self.shards = shards
        self.deliver_local = deliver_local
        self.pending: dict[str, dict[str, Any]] = {}  # key(entry) -> entry, oldest first
        self.settled = 0  # found in history and delivered again (a metric for tests and ops)
        self._task: asyncio.Task[None] | None = None

    def add(self, entry: dict[str, Any]) -> None:
        """An entry whose publish failed without a clear answer: settle it soon."""
        while len(self.pending) >= MAX_PENDING:
            del self.pending[next(iter(self.pending))]
        self.pending[_key(entry)] = entry
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def found(self, entry: dict[str, Any], stored: dict[str, Any]) -> None:
        """An entry history holds, its first answer perhaps lost, with ``stored`` the message
        as history shows it now: to the members here (the origin connection has its ack) and
        to the other gateways, each of which delivers it once."""
        entry = dict(entry, message=stored)
        self.pending.pop(_key(entry), None)
        if entry["type"] == "message":
            entry["sent_ms"] = parse_ms(stored["sent_at"])
        self.deliver_local(entry)
        body = orjson.dumps({"type": "live", "messages": [entry]})
        task = asyncio.ensure_future(
            self.bus.publish(topology.MESSAGES, topology.room_live_key(stored["room"]), body)
        )
        task.add_done_callback(_retrieved)

    async def _run(self) -> None:
        started = time.monotonic()
        while self.pending:
            if time.monotonic() - started > GIVE_UP_AFTER:
                log.warning(
                    "%d messages left unsettled after %.0f s", len(self.pending), GIVE_UP_AFTER
                )
                self.pending.clear()
                return
            try:
                if await self._settle_once():
                    started = time.monotonic()  # what is left came after: its own deadline
            except Exception:
                log.exception("settling messages of lost confirms failed; trying again")
                await asyncio.sleep(RETRY_EVERY)

    async def _settle_once(self) -> bool:
        """Settle what is pending now; False if the broker or a writer is not there yet."""
        if not self.bus.connected:
            await asyncio.sleep(RETRY_EVERY)
            return False
        batch = dict(self.pending)  # the marker below covers what was routed before now
        n = self.shards()
        shards = {topology.shard_of(e["message"]["room"], n) for e in batch.values()}
        if not await self.markers.caught_up(10.0, shards):
            await asyncio.sleep(RETRY_EVERY)
            return False
        for key, entry in batch.items():
            if key not in self.pending:
                continue  # settled meanwhile (a retry found it)
            stored = await asyncio.to_thread(self._lookup, entry)
            if key not in self.pending:
                continue
            if stored is None:
                del self.pending[key]  # never reached history: the sender's retry sends it
                continue
            self.settled += 1
            self.found(entry, stored)
        return True

    def _lookup(self, entry: dict[str, Any]) -> dict[str, Any] | None:
        if entry["type"] == "message":
            return self.store.stored_message(entry["message"]["id"], entry["sender_id"])
        return self.store.changed_message(entry["actor_id"], entry["client_msg_id"])


def _key(entry: dict[str, Any]) -> str:
    if entry["type"] == "message":
        return str(entry["message"]["id"])
    return "change:" + change_id(entry["actor_id"], entry["client_msg_id"])


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and isinstance(task.exception(), PublishError):
        log.info("a settled message's live copy was not published: %s", task.exception())
