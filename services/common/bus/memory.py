"""In-process bus with RabbitMQ's semantics: topic (``*``/``#``) and fanout exchanges, queues
with bindings, manual acks with requeue, a delivery limit and dead-lettering, mandatory
publishes that fail when nothing is bound. Used by the all-in-one mode and by tests.

Durability: nothing here survives the process, so a *persistent* publish that reaches a history
shard is confirmed only once that queue's consumer has acked it, i.e. once the history writer has committed it to the database. An ack
to a sender therefore means "on disk" in the all-in-one mode too (RabbitMQ confirms once the
quorum queue has it; here the database is the first durable place)."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from services.common import topology
from services.common.bus.base import (
    Bus,
    BusUnavailable,
    Delivery,
    Handler,
    PublishError,
)
from services.common.bus.routing import FanoutIndex, TopicIndex


@dataclass
class _Message:
    exchange: str
    routing_key: str
    body: bytes
    headers: dict[str, Any]
    delivery_count: int = 0
    redelivered: bool = False
    confirm: asyncio.Future[bool] | None = None  # a persistent publish waiting for the ack


@dataclass
class _Queue:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    durable: bool = False
    ready: deque[_Message] = field(default_factory=deque)
    unacked: int = 0
    seq: int = 0
    # seq -> (settle(acked), message), in delivery order
    outstanding: dict[int, Any] = field(default_factory=dict)
    prefetch: int = 0  # 0 = unlimited
    auto_ack: bool = False
    handler: Handler | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None


class MemoryBus(Bus):
    def __init__(self, url: str = "memory://", delivery_limit: int = 5) -> None:
        super().__init__(url, delivery_limit)
        self._exchanges: dict[str, str] = {}
        self._routes: dict[str, TopicIndex | FanoutIndex] = {}  # exchange -> its bindings
        self._queues: dict[str, _Queue] = {}
        self._connected = False
        self._locks: set[str] = set()

    async def connect(self) -> None:
        for ex in topology.exchanges():
            self._exchanges[ex.name] = ex.kind
            if ex.name not in self._routes:
                self._routes[ex.name] = FanoutIndex() if ex.kind == "fanout" else TopicIndex()
        for spec in topology.durable_queues(self.delivery_limit):
            if spec.name not in self._queues:  # the dead letters: nobody consumes them here
                self._queues[spec.name] = _Queue(spec.name, dict(spec.arguments))
            for exchange, key in spec.bindings:
                await self.bind(spec.name, exchange, key)
        self._connected = True

    async def close(self) -> None:
        self._connected = False
        for q in self._queues.values():
            if q.task is not None:
                q.task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await q.task
                q.task = None

    @property
    def connected(self) -> bool:
        return self._connected

    # publishing ----------------------------------------------------------------------------
    async def publish(
        self,
        exchange: str,
        routing_key: str,
        body: bytes,
        *,
        mandatory: bool = False,
        persistent: bool = False,
        headers: dict[str, Any] | None = None,
        timeout: float = 5.0,
    ) -> None:
        if not self._connected:
            raise BusUnavailable("bus is not connected")
        if exchange not in self._exchanges:
            raise PublishError(f"no exchange {exchange!r}")
        targets = self._route(exchange, routing_key)
        if mandatory and not targets:
            raise PublishError(f"unroutable: {exchange} {routing_key}")
        confirms: list[asyncio.Future[bool]] = []
        for name in targets:
            q = self._queues[name]
            msg = _Message(exchange, routing_key, body, dict(headers or {}))
            if persistent and q.durable:
                msg.confirm = asyncio.get_running_loop().create_future()
                confirms.append(msg.confirm)
            self._enqueue(q, msg)
        if confirms:  # on disk once the durable queue's consumer (the writer) acks it
            try:
                results = await asyncio.wait_for(asyncio.gather(*confirms), timeout)
            except TimeoutError as exc:
                raise PublishError(
                    "not confirmed in time (is the history writer running?)"
                ) from exc
            if not all(results):
                raise PublishError("the message was rejected by its queue's consumer")

    def _route(self, exchange: str, key: str) -> list[str]:
        index = self._routes.get(exchange)
        if index is None:
            return []
        return [q for q in index.match(key) if q in self._queues]

    def _enqueue(self, q: _Queue, msg: _Message, front: bool = False) -> None:
        if front:
            q.ready.appendleft(msg)
        else:
            q.ready.append(msg)
        q.changed.set()

    def _dead_letter(self, q: _Queue, msg: _Message) -> None:
        dlx = q.arguments.get("x-dead-letter-exchange")
        if not dlx:
            return
        for name in self._route(dlx, msg.routing_key):
            self._enqueue(self._queues[name], _Message(dlx, msg.routing_key, msg.body, msg.headers))

    @staticmethod
    def _confirmed(msg: _Message, ok: bool) -> None:
        if msg.confirm is not None and not msg.confirm.done():
            msg.confirm.set_result(ok)

    # consuming -----------------------------------------------------------------------------
    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        q = self._queues.setdefault(queue, _Queue(queue))
        q.handler, q.prefetch, q.auto_ack = handler, prefetch, False
        self._start(q)

    async def private_queue(self, name: str, handler: Handler) -> None:
        q = self._queues.setdefault(name, _Queue(name))
        q.handler, q.prefetch, q.auto_ack = handler, 0, True
        self._start(q)

    def _start(self, q: _Queue) -> None:
        if q.task is None or q.task.done():
            q.task = asyncio.get_running_loop().create_task(self._dispatch(q))

    async def _dispatch(self, q: _Queue) -> None:
        while True:
            while not q.ready or (q.prefetch and q.unacked >= q.prefetch):
                q.changed.clear()
                await q.changed.wait()
            msg = q.ready.popleft()
            assert q.handler is not None
            if q.auto_ack:
                delivery = Delivery(msg.body, msg.routing_key, msg.exchange, headers=msg.headers)
            else:
                q.unacked += 1
                delivery = self._delivery(q, msg)
            try:
                await q.handler(delivery)
            except Exception:  # a consumer's bug must not stop the queue
                if not q.auto_ack:
                    await delivery.nack(requeue=True)

    def _delivery(self, q: _Queue, msg: _Message) -> Delivery:
        settled = False
        q.seq += 1
        seq = q.seq

        def settle(acked: bool = False) -> bool:
            nonlocal settled
            if settled:
                return False
            settled = True
            q.outstanding.pop(seq, None)
            q.unacked -= 1
            if acked:
                self._confirmed(msg, True)
            return True

        q.outstanding[seq] = (settle, msg)

        async def ack(multiple: bool) -> None:
            if multiple:
                for earlier in [s for s in q.outstanding if s < seq]:
                    q.outstanding[earlier][0](True)
            settle(True)
            q.changed.set()

        async def nack(requeue: bool) -> None:
            if not settle():
                return
            limit = q.arguments.get("x-delivery-limit")
            if requeue and (limit is None or msg.delivery_count < int(limit)):
                msg.delivery_count += 1
                msg.redelivered = True
                self._enqueue(q, msg, front=True)
            else:
                self._confirmed(msg, False)
                self._dead_letter(q, msg)
            q.changed.set()

        return Delivery(
            msg.body,
            msg.routing_key,
            msg.exchange,
            redelivered=msg.redelivered,
            delivery_count=msg.delivery_count,
            headers=msg.headers,
            _ack=ack,
            _nack=nack,
        )

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        if queue not in self._queues:
            self._queues[queue] = _Queue(queue)
        index = self._routes.get(exchange)
        if index is None:
            raise PublishError(f"no exchange {exchange!r}")
        index.add(routing_key, queue)

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        index = self._routes.get(exchange)
        if index is not None:
            index.remove(routing_key, queue)

    def binding_count(self) -> int:
        return sum(len(index) for index in self._routes.values())

    async def declare_history(self, shards: int) -> None:
        for spec in topology.history_queues(shards, self.delivery_limit):
            if spec.name not in self._queues:
                self._queues[spec.name] = _Queue(spec.name, dict(spec.arguments), durable=True)
            for exchange, key in spec.bindings:
                await self.bind(spec.name, exchange, key)

    async def cancel(self, queue: str) -> None:
        q = self._queues.get(queue)
        if q is None:
            return
        if q.task is not None:
            q.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await q.task
            q.task = None
        q.handler = None
        for seq in sorted(q.outstanding, reverse=True):  # back to the front, in order
            settle, msg = q.outstanding[seq]
            if settle():
                msg.redelivered = True
                q.ready.appendleft(msg)
        q.changed.set()

    async def try_lock(self, name: str) -> bool:
        if name in self._locks:
            return False
        self._locks.add(name)
        return True

    async def unlock(self, name: str) -> None:
        self._locks.discard(name)

    async def queue_depth(self, queue: str) -> int:
        q = self._queues.get(queue)
        return len(q.ready) if q else 0

    async def delete_queue(self, queue: str) -> None:
        q = self._queues.pop(queue, None)
        if q is not None and q.task is not None:
            q.task.cancel()
        for index in self._routes.values():
            index.remove_queue(queue)
