"""How a gateway sends the messages it accepts (issue 15: the broker path's cost per message
falls with load).

- **History**: the messages for one shard that arrive while that shard has no batch in flight
  go out together, as ONE persistent, mandatory, confirmed message to the shard's queue
  (``history.<shard>``, ``{"type":"batch","messages":[...]}``); every sender in it is acked on
  that one confirm. At most one batch per shard is in flight: at low load a batch is one
  message and nothing waits; under load, what arrives during a confirm's round trip forms the
  next batch, so the cost per message falls as the load rises. Order within a shard (and so
  within a room) is the order of acceptance.
- **Live delivery**: only once history holds the batch, the same messages go to the other
  gateways as cheaply as the broker allows: transient, unconfirmed, grouped by room
  (``room.<id>.live``). The local members get them at once, without the broker. A live copy
  the broker drops (it restarted) is what the resume rule covers: every gateway that may have
  missed one tells its clients to resync, and history has the message.

Because live copies leave only after the history copy is confirmed, a message a client missed
live was routed to history before any marker published after the client's gateway bound the
room: ``synced`` still means "history holds what you missed".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson

from services.common import topology
from services.common.bus import Bus, PublishError

log = logging.getLogger("chat.gateway.publisher")

MAX_BATCH = 500  # messages in one history batch
UNSENT_MAX = 10_000  # live copies kept for a broker that is away


class Publisher:
    def __init__(
        self,
        bus: Bus,
        shards: Callable[[], int],
        deliver_local: Callable[[dict[str, Any]], None],
    ) -> None:
        self.bus = bus
        self.shards = shards
        self.deliver_local = deliver_local
        self._buffers: dict[int, list[tuple[dict[str, Any], asyncio.Future[None]]]] = {}
        self._busy: set[int] = set()  # shards with a batch in flight (or a flush coming)
        self._unsent: list[tuple[str, bytes]] = []  # live copies the broker did not take
        self._retrying = False
        self.batches = 0
        self.messages = 0

    async def publish(self, event: dict[str, Any]) -> None:
        """Return once the message is durably in its history shard (raise PublishError if the
        broker refused it or did not confirm): then it is on its way to every member."""
        shard = topology.shard_of(event["message"]["room"], self.shards())
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._buffers.setdefault(shard, []).append((event, future))
        if shard not in self._busy:
            self._busy.add(shard)
            # at the end of this turn of the loop: what else arrives in it goes along
            asyncio.get_running_loop().call_soon(self._start, shard)
        await future

    def _start(self, shard: int) -> None:
        task = asyncio.get_running_loop().create_task(self._flush(shard))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _flush(self, shard: int) -> None:
        try:
            while self._buffers.get(shard):
                items = self._buffers[shard][:MAX_BATCH]
                del self._buffers[shard][:MAX_BATCH]
                await self._send(shard, items)
        finally:
            self._busy.discard(shard)
            if self._buffers.get(shard):  # arrived while the last send was finishing
                self._busy.add(shard)
                asyncio.get_running_loop().call_soon(self._start, shard)

    async def _send(
        self, shard: int, items: list[tuple[dict[str, Any], asyncio.Future[None]]]
    ) -> None:
        events = [e for e, _ in items]
        body = orjson.dumps({"type": "batch", "messages": events})
        try:
            await self.bus.publish(
                topology.MESSAGES,
                topology.history_batch_key(shard),
                body,
                mandatory=True,
                persistent=True,
            )
        except PublishError as exc:
            for _, f in items:
                if not f.done():
                    f.set_exception(exc)
                    f.exception()  # retrieved: each sender hears of it through its await
            return
        except BaseException as exc:  # cancelled: every sender hears it was not accepted
            err = PublishError(f"the batch was not confirmed: {exc!r}")
            for _, f in items:
                if not f.done():
                    f.set_exception(err)
                    f.exception()
            raise
        self.batches += 1
        self.messages += len(events)
        by_room: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            by_room.setdefault(e["message"]["room"], []).append(e)
        for room, evs in by_room.items():
            key, live = (
                topology.room_live_key(room),
                orjson.dumps({"type": "live", "messages": evs}),
            )
            try:
                await self.bus.publish_transient(topology.MESSAGES, key, live)
            except PublishError:  # our broker connection died: other gateways did not get it
                self._keep(key, live)
        for e in events:
            self.deliver_local(e)
        for _, f in items:
            if not f.done():
                f.set_result(None)

    def _keep(self, key: str, body: bytes) -> None:
        """Send a live copy again once the broker takes it (late is fine: gateways drop a
        copy they have had by id). Bounded: past it, the oldest go (history has them)."""
        self._unsent.append((key, body))
        del self._unsent[: max(0, len(self._unsent) - UNSENT_MAX)]
        if not self._retrying:
            self._retrying = True
            task = asyncio.get_running_loop().create_task(self._resend())
            task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)

    async def _resend(self) -> None:
        try:
            while self._unsent:
                await asyncio.sleep(0.5)
                while self._unsent:
                    key, body = self._unsent[0]
                    try:
                        await self.bus.publish_transient(topology.MESSAGES, key, body)
                    except PublishError:
                        break
                    self._unsent.pop(0)
        finally:
            self._retrying = False
