"""The bus contract: a handful of async methods, two implementations chosen by URL.

- ``memory://``: in-process, same topic (``*``/``#``) and fanout semantics, for the all-in-one
  mode and for tests of code above the bus.
- ``amqp://``: RabbitMQ through aio-pika (publisher confirms, mandatory publishes).

Fan-out to local subscribers is not the bus's job: the gateway does it once, above the bus.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common import topology


class PublishError(RuntimeError):
    """The broker did not accept the message (down, nacked, unroutable, or timed out)."""


class BusUnavailable(PublishError):
    """There is no broker connection right now."""


@dataclass
class Delivery:
    body: bytes
    routing_key: str
    exchange: str
    redelivered: bool = False
    delivery_count: int = 0  # how many times delivered before (quorum x-delivery-count)
    headers: dict[str, Any] = field(default_factory=dict)
    _ack: Callable[[bool], Awaitable[None]] | None = None
    _nack: Callable[[bool], Awaitable[None]] | None = None

    async def ack(self, multiple: bool = False) -> None:
        """``multiple=True`` also acks every earlier unsettled delivery of the same consumer
        (one frame for a whole batch)."""
        if self._ack is not None:
            await self._ack(multiple)

    async def nack(self, requeue: bool = True) -> None:
        """requeue=False dead-letters the message (if its queue has a dead-letter exchange)."""
        if self._nack is not None:
            await self._nack(requeue)


Handler = Callable[[Delivery], Awaitable[None]]
Listener = Callable[[], Awaitable[None]]


class Bus(abc.ABC):
    """What every service needs from a message broker."""

    def __init__(self, url: str, delivery_limit: int = 5) -> None:
        self.url = url
        self.delivery_limit = delivery_limit
        self._reconnect_listeners: list[Listener] = []
        self._disconnect_listeners: list[Listener] = []

    # lifecycle -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and declare the durable topology (exchanges, history and dead queues)."""

    @abc.abstractmethod
    async def close(self) -> None: ...

    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    # publishing ----------------------------------------------------------------------------
    @abc.abstractmethod
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
        """Return once the broker has confirmed; raise PublishError otherwise.

        ``mandatory=True`` raises if no queue received the message.
        """

    async def publish_transient(self, exchange: str, routing_key: str, body: bytes) -> None:
        """Route a message as cheaply as the broker allows: not persistent, not confirmed, not
        mandatory (raise PublishError only when there is no broker to take it)."""
        await self.publish(exchange, routing_key, body)

    async def publish_many(
        self,
        items: Sequence[tuple[str, str, bytes]],
        *,
        timeout: float = 10.0,
        durable: Callable[[str], bool] | None = None,
    ) -> int:
        """Publish in order, with confirms, many at once where the broker allows (pipelined on
        one channel: the broker routes them in this order); how many, from the first, were
        confirmed (a failure stops counting: what follows may have gone through or not).
        ``durable(routing_key)``: publish that one mandatory and persistent (a history entry)."""
        done = 0
        for exchange, key, body in items:
            sure = durable is not None and durable(key)
            try:
                await self.publish(
                    exchange, key, body, timeout=timeout, mandatory=sure, persistent=sure
                )
            except PublishError:
                break
            done += 1
        return done

    # consuming -----------------------------------------------------------------------------
    @abc.abstractmethod
    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        """Consume a durable queue with manual acks (the handler must ack or nack)."""

    @abc.abstractmethod
    async def private_queue(self, name: str, handler: Handler) -> None:
        """Declare an exclusive, auto-delete queue and consume it with automatic acks."""

    @abc.abstractmethod
    async def bind(self, queue: str, exchange: str, routing_key: str) -> None: ...

    @abc.abstractmethod
    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None: ...

    async def bind_many(
        self, queue: str, bindings: Sequence[tuple[str, str]], *, timeout: float = 10.0
    ) -> None:
        """Bind many (exchange, routing key) pairs at once, pipelined where the broker allows;
        raise BusUnavailable unless every one is in place when this returns.

        Unlike ``bind``, these bindings are the caller's to keep: they are not restored after
        a reconnect (the caller re-applies them from its own ``on_reconnect`` listener)."""
        for exchange, key in bindings:
            await self.bind(queue, exchange, key)

    async def unbind_many(
        self, queue: str, bindings: Sequence[tuple[str, str]], *, timeout: float = 10.0
    ) -> None:
        for exchange, key in bindings:
            await self.unbind(queue, exchange, key)

    @abc.abstractmethod
    async def queue_depth(self, queue: str) -> int:
        """Messages ready in a durable queue (for metrics and readiness)."""

    @abc.abstractmethod
    async def declare_history(self, shards: int) -> None:
        """Declare the history shards 0..shards-1 and their bindings (idempotent)."""

    @abc.abstractmethod
    async def cancel(self, queue: str) -> None:
        """Stop consuming a durable queue: what was delivered and is not acked goes back to
        the queue (in order), for the next consumer."""

    @abc.abstractmethod
    async def try_lock(self, name: str) -> bool:
        """Take a named lock held by this connection (an exclusive queue on RabbitMQ): False
        if another connection holds it. It is released by ``unlock`` or when the connection
        dies, whatever way it dies."""

    @abc.abstractmethod
    async def unlock(self, name: str) -> None: ...

    # connection events ---------------------------------------------------------------------
    def on_reconnect(self, listener: Listener) -> None:
        """Called after the connection came back and the topology and bindings are restored."""
        self._reconnect_listeners.append(listener)

    def on_disconnect(self, listener: Listener) -> None:
        self._disconnect_listeners.append(listener)

    async def _fire(self, listeners: list[Listener]) -> None:
        for listener in list(listeners):
            await listener()


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on '.', ``*`` is one word, ``#`` zero or more."""
    return _match(pattern.split("."), key.split(".")) if pattern else key == ""


def _match(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    head = pat[0]
    if head == "#":
        return any(_match(pat[1:], words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    if head == "*" or head == words[0]:
        return _match(pat[1:], words[1:])
    return False


def create_bus(url: str, delivery_limit: int = 5) -> Bus:
    """The URL scheme picks the backend; its driver is imported only when used."""
    if url.startswith("memory:"):
        from services.common.bus.memory import MemoryBus

        return MemoryBus(url, delivery_limit)
    if url.startswith(("amqp:", "amqps:")):
        from services.common.bus.amqp import AmqpBus

        return AmqpBus(url, delivery_limit)
    raise ValueError(f"unknown broker URL scheme: {url.split(':', 1)[0]!r}")


__all__ = [
    "Bus",
    "BusUnavailable",
    "Delivery",
    "Handler",
    "PublishError",
    "create_bus",
    "topic_matches",
    "topology",
]
