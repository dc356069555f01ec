"""How a gateway sends the messages it accepts (issue 15: the broker path's cost per message
falls with load).

- **History**: the messages for one shard that arrive while that shard has no batch in flight
  go out together, as ONE persistent, mandatory, confirmed message to the shard's queue
  (``history.<shard>``, ``{"type":"batch","messages":[...]}``); every sender in it is acked on
  that one confirm. At most one batch per shard is in flight: at low load a batch is one
  message and nothing waits; under load, what arrives during a confirm's round trip forms the
  next batch, so the cost per message falls as the load rises. Order within a shard (and so
  within a room) is the order of acceptance.
- **Live delivery**: right behind the batch, on the same channel, the same messages go to the
  other gateways transient and not persistent, grouped by room (``room.<id>.live``); nothing
  waits for their confirms. The local members get them once the batch is confirmed, without
  the broker. A live copy the broker drops (it restarted) is what the resume rule covers: every
  gateway that may have missed one tells its clients to resync, and history has the message.

The broker routes a channel's messages in order, so a live copy is routed after its history
copy: a message a client missed live was routed to history before any marker published after
the client's gateway bound the room, and ``synced`` still means "history holds what you
missed".
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
        by_room: dict[str, list[dict[str, Any]]] = {}
        for e in events:
            by_room.setdefault(e["message"]["room"], []).append(e)
        # the history batch first, then the live copies, on the same channel and in the same
        # turn of the loop: the broker routes them in that order (the resume rule needs the
        # history copy routed before any live one), and a gateway that dies once the batch
        # has left has sent its live copies with it (waiting for the confirm before sending
        # them left other gateways' members without a message that history held)
        durable = asyncio.ensure_future(
            self.bus.publish(
                topology.MESSAGES,
                topology.history_batch_key(shard),
                body,
                mandatory=True,
                persistent=True,
            )
        )
        for room, evs in by_room.items():
            live = asyncio.ensure_future(
                self.bus.publish(
                    topology.MESSAGES,
                    topology.room_live_key(room),
                    orjson.dumps({"type": "live", "messages": evs}),
                )
            )
            live.add_done_callback(_retrieved)
        try:
            await durable
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
        for e in events:
            self.deliver_local(e)
        for _, f in items:
            if not f.done():
                f.set_result(None)


def _retrieved(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.debug("a live copy was not confirmed: %s", task.exception())
