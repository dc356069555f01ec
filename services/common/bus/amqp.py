"""RabbitMQ through aio-pika: a robust connection (it redeclares queues, bindings and
consumers after a broker restart), one publisher channel with confirms and returns raised,
and one channel per consumer so each has its own prefetch.

The per-message paths skip aio-pika's object layer and talk to the aiormq channel beneath it
(aio-pika's per-message cost is ~2.6x aiormq's): ``publish`` calls ``basic_publish`` with
prebuilt properties, and every consumer (the auto-ack private queues and the manual-ack durable
queues) uses ``basic_consume`` (re-issued after a reconnect, once aio-pika has restored the
channel, its prefetch, the queue and its bindings)."""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractQueue,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from yarl import URL

from services.common import topology
from services.common.bus.base import Bus, BusUnavailable, Delivery, Handler, PublishError

log = logging.getLogger("chat.bus")

# aiormq declares a connection dead after (heartbeat + 1) x this many seconds of silence; its
# default of 3 means ~4 heartbeats; 2 brings detection close to two heartbeats
aiormq.Connection.HEARTBEAT_GRACE_MULTIPLIER = 2

# a TCP connection that opens but never completes the AMQP handshake (a blackholed link, a hung
# broker) fails after this many seconds; aio-pika applies it to every reconnection attempt too,
# which otherwise waits with no bound (no heartbeat is negotiated before the handshake ends)
CONNECT_TIMEOUT = 10.0

# the broker applies a channel's bindings one at a time (a Mnesia transaction each, ~0.5-1 ms
# here); a few channels at once are ~1.6x faster, more do not help (measured on RabbitMQ 3.10)
BIND_CHANNELS = 4

_TRANSIENT = aiormq.spec.Basic.Properties(
    content_type="application/json", delivery_mode=1, message_id="live"
)

# seconds between reconnection attempts (aio-pika's default is 5); with several nodes, each
# attempt goes to the next one
RECONNECT_INTERVAL = 2.0

# aiormq matches a returned (unroutable) message to its publish by message_id, so every publish
# carries its own; a counter is cheaper than the random UUID aiormq would make
_message_ids = itertools.count(1)
_ID_PREFIX = f"{os.getpid():x}-"


class AmqpBus(Bus):
    """``url`` may list several nodes of a cluster, comma-separated full URLs: the first that
    answers is used, and after a connection loss the next one in turn (a node that died is
    left for one that lives; aio-pika alone would retry the same node forever)."""

    def __init__(self, url: str, delivery_limit: int = 5) -> None:
        super().__init__(url, delivery_limit)
        self._urls = [u.strip() for u in url.split(",") if u.strip()]
        self._url_index = 0
        self._conn: AbstractRobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None
        self._ctl: AbstractRobustChannel | None = None
        self._binders: list[AbstractRobustChannel] = []  # bind_many spreads over these
        self._exchanges: dict[str, AbstractExchange] = {}
        self._queues: dict[str, AbstractQueue] = {}
        self._consumer_channels: list[AbstractRobustChannel] = []
        self._raw_consumers: list[tuple[AbstractRobustChannel, str, Any, bool]] = []
        self._raw_pub: aiormq.abc.AbstractChannel | None = None
        self._fast: AbstractRobustChannel | None = None  # no confirms: transient publishes
        self._raw_fast: aiormq.abc.AbstractChannel | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._history_shards = 0  # declared; declared again after a reconnect

    async def connect(self) -> None:
        # the heartbeat bounds how fast a dead broker is noticed; ?heartbeat=N in the URL wins
        last: Exception | None = None
        for _ in range(len(self._urls)):
            url = self._urls[self._url_index]
            extra: dict[str, Any] = {} if "heartbeat=" in url else {"heartbeat": 10}
            try:
                self._conn = await aio_pika.connect_robust(
                    url,
                    client_properties={"connection_name": "chat"},
                    timeout=CONNECT_TIMEOUT,
                    reconnect_interval=RECONNECT_INTERVAL,
                    **extra,
                )
                break
            except Exception as exc:  # this node is away: the next one
                last = exc
                self._url_index = (self._url_index + 1) % len(self._urls)
        else:
            assert last is not None
            raise last
        self._conn.reconnect_callbacks.add(self._reconnected)
        self._conn.close_callbacks.add(self._closed)
        self._pub = await self._conn.channel(publisher_confirms=True, on_return_raises=True)
        self._fast = await self._conn.channel(publisher_confirms=False)
        self._ctl = await self._conn.channel(publisher_confirms=False)
        await self._declare(self._ctl)
        self._binders = [
            await self._conn.channel(publisher_confirms=False) for _ in range(BIND_CHANNELS)
        ]

    async def _declare(self, channel: AbstractRobustChannel) -> None:
        for ex in topology.exchanges():
            self._exchanges[ex.name] = await channel.declare_exchange(
                ex.name, ex.kind, durable=True
            )
        for spec in topology.durable_queues(self.delivery_limit):
            q = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
            for exchange, key in spec.bindings:
                await q.bind(exchange, key)
        assert self._pub is not None
        for ex in topology.exchanges():  # the publisher channel's own exchange objects
            self._exchanges[ex.name] = await self._pub.get_exchange(ex.name, ensure=False)

    def _reconnected(self, *_: Any) -> None:
        log.info("broker connection restored")
        self._raw_pub = None
        self._raw_fast = None
        self._spawn(self._after_reconnect())

    async def _after_reconnect(self) -> None:
        if self._history_shards:
            try:  # a broker that lost its data has no shards: a consumer would fail
                await self.declare_history(self._history_shards)
            except Exception:
                log.exception("could not declare the history shards after a reconnect")
        for channel, queue, callback, no_ack in self._raw_consumers:
            try:
                raw = await channel.get_underlay_channel()
                await raw.basic_consume(queue, callback, no_ack=no_ack)
            except Exception:
                log.exception("could not resume consuming %s after a reconnect", queue)
        await self._fire(self._reconnect_listeners)

    def _closed(self, *_: Any) -> None:
        log.warning("broker connection lost")
        if len(self._urls) > 1 and self._conn is not None:  # reconnect to the next node
            self._url_index = (self._url_index + 1) % len(self._urls)
            self._conn.url = URL(self._urls[self._url_index])  # type: ignore[attr-defined]
        self._spawn(self._fire(self._disconnect_listeners))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close_callbacks.discard(self._closed)
            await self._conn.close()
            self._conn = None

    @property
    def connected(self) -> bool:
        conn = self._conn
        return conn is not None and not conn.is_closed and conn.connected.is_set()

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
        if not self.connected or self._pub is None:
            raise BusUnavailable("not connected to the broker")
        if exchange not in self._exchanges:
            raise PublishError(f"no exchange {exchange!r}")
        props = aiormq.spec.Basic.Properties(
            content_type="application/json",
            delivery_mode=2 if persistent else 1,
            headers=headers,
            message_id=f"{_ID_PREFIX}{next(_message_ids)}",
        )
        try:
            channel = self._raw_pub
            if channel is None or channel.is_closed:
                channel = self._raw_pub = await self._pub.get_underlay_channel()
            result = await channel.basic_publish(  # type: ignore[call-arg]
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=props,
                mandatory=mandatory,
                timeout=timeout,
                wait=False,  # no need to wait for the socket write: the confirm is awaited
            )
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BusUnavailable("broker connection lost while publishing") from exc
        except aiormq.exceptions.DeliveryError as exc:
            raise PublishError(f"broker refused the message: {exc}") from exc
        except TimeoutError as exc:
            raise PublishError("publish not confirmed in time") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"broker unavailable: {exc!r}") from exc
        if not isinstance(result, aiormq.spec.Basic.Ack):
            raise PublishError(f"broker did not confirm: {result!r}")

    async def publish_transient(self, exchange: str, routing_key: str, body: bytes) -> None:
        """On a channel without confirms: written to the socket, nothing awaited."""
        if not self.connected or self._fast is None:
            raise BusUnavailable("not connected to the broker")
        try:
            channel = self._raw_fast
            if channel is None or channel.is_closed:
                channel = self._raw_fast = await self._fast.get_underlay_channel()
            await channel.basic_publish(  # type: ignore[call-arg]
                body,
                exchange=exchange,
                routing_key=routing_key,
                properties=_TRANSIENT,
                wait=False,
            )
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BusUnavailable("broker connection lost while publishing") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"broker unavailable: {exc!r}") from exc

    async def publish_many(
        self,
        items: Sequence[tuple[str, str, bytes]],
        *,
        timeout: float = 10.0,
        durable: Callable[[str], bool] | None = None,
    ) -> int:
        """Every publish is started at once, in order (aiormq writes them to the channel in
        the order they take its lock, which is this order), then the confirms are awaited."""
        if not items:
            return 0

        def sure(key: str) -> bool:
            return durable is not None and durable(key)

        results = await asyncio.gather(
            *(
                self.publish(
                    ex, key, body, timeout=timeout, mandatory=sure(key), persistent=sure(key)
                )
                for ex, key, body in items
            ),
            return_exceptions=True,
        )
        done = 0
        for r in results:
            if isinstance(r, BaseException):
                if not isinstance(r, PublishError):
                    log.warning("publish failed: %r", r)
                break
            done += 1
        return done

    async def consume(self, queue: str, handler: Handler, *, prefetch: int) -> None:
        conn = self._require()
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=prefetch)  # the robust channel restores it
        self._consumer_channels.append(channel)
        await channel.get_queue(queue, ensure=True)

        async def on_raw(message: aiormq.abc.DeliveredMessage) -> None:
            delivery = _manual_delivery(message)
            try:
                await handler(delivery)
            except Exception:
                log.exception("consumer failed on a message")
                await delivery.nack(requeue=True)

        raw = await channel.get_underlay_channel()
        await raw.basic_consume(queue, on_raw, no_ack=False)
        self._raw_consumers.append((channel, queue, on_raw, False))

    async def private_queue(self, name: str, handler: Handler) -> None:
        conn = self._require()
        channel = await conn.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=2000)
        self._consumer_channels.append(channel)
        q = await channel.declare_queue(name, exclusive=True, auto_delete=True)
        self._queues[name] = q

        async def on_raw(message: aiormq.abc.DeliveredMessage) -> None:
            try:
                await handler(
                    Delivery(
                        body=message.body,
                        routing_key=message.routing_key or "",
                        exchange=message.exchange or "",
                    )
                )
            except Exception:
                log.exception("consumer failed on a message")

        raw = await channel.get_underlay_channel()
        await raw.basic_consume(name, on_raw, no_ack=True)
        self._raw_consumers.append((channel, name, on_raw, True))

    async def bind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._binding(queue, exchange, routing_key, bind=True)

    async def unbind(self, queue: str, exchange: str, routing_key: str) -> None:
        await self._binding(queue, exchange, routing_key, bind=False)

    async def _binding(
        self, queue: str, exchange: str, routing_key: str, *, bind: bool, timeout: float = 5.0
    ) -> None:
        """Fail fast while disconnected (aio-pika would wait for the broker without a bound);
        the caller keeps track of what it wanted and re-applies it after a reconnect."""
        if not self.connected:
            raise BusUnavailable("not connected to the broker")
        q = await self._queue(queue)
        try:
            op = q.bind(exchange, routing_key) if bind else q.unbind(exchange, routing_key)
            await asyncio.wait_for(op, timeout)
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BusUnavailable("broker connection lost while binding") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            raise BusUnavailable(f"{'bind' if bind else 'unbind'} failed: {exc!r}") from exc

    async def bind_many(
        self, queue: str, bindings: Sequence[tuple[str, str]], *, timeout: float = 10.0
    ) -> None:
        """Pipelined over ``BIND_CHANNELS`` channels: on each, every Queue.Bind but the last
        goes out with no-wait and the last waits for its BindOk. A channel handles its methods
        in order, so that answer means every bind before it is in place too (a failing one
        closes the channel and fails the last)."""
        if not bindings:
            return
        pool: list[AbstractRobustChannel | None] = list(self._binders) or [self._ctl]
        channels = [await self._control_channel(ch) for ch in pool[: len(bindings)]]

        async def pipeline(
            raw: aiormq.abc.AbstractChannel, part: Sequence[tuple[str, str]]
        ) -> None:
            *pipelined, (last_ex, last_key) = part
            for exchange, key in pipelined:
                await raw.queue_bind(queue, exchange, key, nowait=True)
            await raw.queue_bind(queue, last_ex, last_key)

        n = len(channels)
        try:
            async with asyncio.timeout(timeout):
                await asyncio.gather(
                    *(pipeline(raw, bindings[i::n]) for i, raw in enumerate(channels))
                )
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BusUnavailable("broker connection lost while binding") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            raise BusUnavailable(f"bind failed: {exc!r}") from exc

    async def unbind_many(
        self, queue: str, bindings: Sequence[tuple[str, str]], *, timeout: float = 10.0
    ) -> None:
        """Queue.Unbind has no no-wait flag in AMQP 0-9-1: one round trip each."""
        if not bindings:
            return
        raw = await self._control_channel()
        try:
            async with asyncio.timeout(timeout):
                for exchange, key in bindings:
                    await raw.queue_unbind(queue, exchange, key)
        except asyncio.CancelledError as exc:
            _reraise_if_cancelled()
            raise BusUnavailable("broker connection lost while unbinding") from exc
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, TimeoutError) as exc:
            raise BusUnavailable(f"unbind failed: {exc!r}") from exc

    async def _control_channel(
        self, channel: AbstractRobustChannel | None = None
    ) -> aiormq.abc.AbstractChannel:
        channel = channel or self._ctl
        if not self.connected or channel is None:
            raise BusUnavailable("not connected to the broker")
        try:
            raw = await channel.get_underlay_channel()
        except Exception as exc:
            raise BusUnavailable(f"no control channel: {exc!r}") from exc
        if raw.is_closed:
            raise BusUnavailable("the control channel is closed")
        return raw

    async def declare_history(self, shards: int) -> None:
        """On a plain channel (not restored by aio-pika: after a reshard, queues that are gone
        must stay gone); again after every reconnect, with the latest count."""
        raw = await self._control_channel()
        for spec in topology.history_queues(shards, self.delivery_limit):
            await raw.queue_declare(spec.name, durable=True, arguments=spec.arguments)
            for exchange, key in spec.bindings:
                await raw.queue_bind(spec.name, exchange, key)
        self._history_shards = shards

    async def cancel(self, queue: str) -> None:
        """Close the queue's consumer channel: the broker requeues what it had not acked."""
        keep = []
        for entry in self._raw_consumers:
            channel, name, _callback, _no_ack = entry
            if name != queue:
                keep.append(entry)
                continue
            if channel in self._consumer_channels:
                self._consumer_channels.remove(channel)
            try:
                await channel.close()
            except Exception as exc:
                log.warning("closing the consumer of %s: %s", queue, exc)
        self._raw_consumers = keep

    async def _raw_channel(self) -> aiormq.abc.AbstractChannel:
        """A channel of the current connection that aio-pika does not restore."""
        conn = self._conn
        if conn is None or not self.connected or conn.transport is None:
            raise BusUnavailable("not connected to the broker")
        return await conn.transport.connection.channel(publisher_confirms=False)

    async def try_lock(self, name: str) -> bool:
        """An exclusive queue of this connection (RabbitMQ deletes it with the connection)."""
        try:
            channel = await self._raw_channel()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"no channel for a lock: {exc!r}") from exc
        try:
            await channel.queue_declare(name, exclusive=True, auto_delete=False)
        except aiormq.exceptions.ChannelLockedResource:
            return False  # held by another connection (the channel is closed by the broker)
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            raise BusUnavailable(f"lock {name} not taken: {exc!r}") from exc
        try:
            await channel.close()
        except Exception:
            pass
        return True

    async def unlock(self, name: str) -> None:
        try:
            channel = await self._raw_channel()
            await channel.queue_delete(name)
            await channel.close()
        except (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError) as exc:
            log.warning("lock %s not released (it goes with the connection): %r", name, exc)

    async def _queue(self, name: str) -> AbstractQueue:
        q = self._queues.get(name)
        if q is None:
            if self._ctl is None:
                raise BusUnavailable("not connected to the broker")
            q = await self._ctl.get_queue(name, ensure=False)
            self._queues[name] = q
        return q

    async def queue_depth(self, queue: str) -> int:
        conn = self._require()
        channel = await conn.channel(publisher_confirms=False)
        try:
            q = await channel.declare_queue(queue, passive=True)
            result = q.declaration_result
            return int(result.message_count or 0)
        finally:
            await channel.close()

    def _require(self) -> AbstractRobustConnection:
        if self._conn is None:
            raise BusUnavailable("not connected to the broker")
        return self._conn


def _manual_delivery(message: aiormq.abc.DeliveredMessage) -> Delivery:
    """A manual-ack delivery straight from aiormq: acks go to the channel it came on (after a
    reconnect that channel is gone and the broker redelivers; message ids make that safe)."""
    frame = message.delivery
    props = message.header.properties
    headers = dict(props.headers or {})
    count = headers.get("x-delivery-count", 0)
    channel, tag = message.channel, message.delivery_tag or 0

    async def ack(multiple: bool) -> None:
        try:
            await channel.basic_ack(tag, multiple=multiple, wait=False)
        except Exception:
            log.warning("ack failed; the message will be redelivered")

    async def nack(requeue: bool) -> None:
        try:
            await channel.basic_nack(tag, requeue=requeue, wait=False)
        except Exception:
            log.warning("nack failed; the message will be redelivered")

    return Delivery(
        body=message.body,
        routing_key=message.routing_key or "",
        exchange=message.exchange or "",
        redelivered=bool(getattr(frame, "redelivered", False)),
        delivery_count=int(count) if isinstance(count, int) else 0,
        headers=headers,
        _ack=ack,
        _nack=nack,
    )


def _reraise_if_cancelled() -> None:
    """aiormq cancels the operations in flight when it declares a connection dead: that is a
    broker failure to report, unless our own task is the one being cancelled."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
