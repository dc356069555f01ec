"""The WebSocket ceilings: a tiny Starlette relay with no auth and no database.

    uvicorn bench.relay_app:app --ws websockets-sansio   (started by bench/ceiling.py)
    RELAY_AMQP_URL=amqp://... uvicorn bench.relay_app:app ...   (the same over RabbitMQ)
    python -m bench.relay_app drain amqp://...   (the history-queue drainer of the AMQP relay)

A client says ``{"type":"hello","id":X}`` and gets ``ready``; a ``send`` frame
``{"type":"send","to":Y,"body","client_msg_id"}`` is forwarded to Y as
``{"type":"message","message":{...}}`` and acked to the sender, like the gateway's frames.
Same server stack as the gateway (uvicorn, uvloop, httptools, websockets-sansio, orjson).

Without ``RELAY_AMQP_URL`` the relay hands the frame straight to Y's socket (the WebSocket
ceiling). With it, the relay does the least a gateway on RabbitMQ must do, on the chat's broker
path and with the chat's AMQP client (aiormq): each send is published persistent and mandatory
to a topic exchange and acked once the broker confirms; the relay's own auto-delete queue
(bound to the exchange) delivers it to Y; a durable quorum queue bound to the same exchange is
drained by a second process acking in batches (``drain``: the history writer without its
database). No auth, validation, ids, presence, rate limits or metrics: the ceiling of a
WebSocket gateway on this broker path, on this machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiormq
import orjson
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

peers: dict[str, WebSocket] = {}

AMQP_URL = os.environ.get("RELAY_AMQP_URL", "")
EXCHANGE = "relay.messages"
HISTORY = "relay.history"  # quorum, like chat.history
_ids = itertools.count(1)
_pub: list[Any] = []  # the publisher channel, once connected
_tasks: set[asyncio.Task[None]] = set()


async def declare(channel: Any) -> None:
    await channel.exchange_declare(EXCHANGE, exchange_type="topic", durable=True)
    await channel.queue_declare(HISTORY, durable=True, arguments={"x-queue-type": "quorum"})
    await channel.queue_bind(HISTORY, EXCHANGE, routing_key="to.#")


async def on_delivery(message: Any) -> None:
    event = orjson.loads(message.body)
    peer = peers.get(event["to"])
    if peer is not None:
        await peer.send_text(
            orjson.dumps({"type": "message", "message": event["message"]}).decode()
        )


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    if not AMQP_URL:
        yield
        return
    conn = await aiormq.connect(AMQP_URL)
    pub = await conn.channel(publisher_confirms=True)
    await declare(pub)
    mine = await pub.queue_declare(exclusive=True, auto_delete=True)
    assert mine.queue is not None
    await pub.queue_bind(mine.queue, EXCHANGE, routing_key="to.#")
    sub = await conn.channel()
    await sub.basic_qos(prefetch_count=2000)
    await sub.basic_consume(mine.queue, on_delivery, no_ack=True)
    _pub.append(pub)
    try:
        yield
    finally:
        await conn.close()


async def publish_then_ack(ws: WebSocket, to: str, msg: dict[str, Any]) -> None:
    props = aiormq.spec.Basic.Properties(
        content_type="application/json", delivery_mode=2, message_id=str(next(_ids))
    )
    confirm = await _pub[0].basic_publish(
        orjson.dumps({"to": to, "message": msg}),
        exchange=EXCHANGE,
        routing_key=f"to.{to}",
        properties=props,
        mandatory=True,
        timeout=5,
        wait=False,
    )
    if isinstance(confirm, aiormq.spec.Basic.Ack):
        ack = {"type": "ack", "client_msg_id": msg["client_msg_id"], "message": msg}
        await ws.send_text(orjson.dumps(ack).decode())


async def relay(ws: WebSocket) -> None:
    await ws.accept()
    hello = orjson.loads(await ws.receive_text())
    me = str(hello["id"])
    peers[me] = ws
    await ws.send_text('{"type":"ready"}')
    try:
        while True:
            f = orjson.loads(await ws.receive_text())
            if f.get("type") != "send":
                continue
            msg = {
                "id": f["client_msg_id"],
                "sender": me,
                "body": f["body"],
                "client_msg_id": f["client_msg_id"],
            }
            if AMQP_URL:  # concurrent sends, like the gateway: a task each, acked on confirm
                task = asyncio.get_running_loop().create_task(publish_then_ack(ws, f["to"], msg))
                _tasks.add(task)
                task.add_done_callback(_tasks.discard)
                continue
            peer = peers.get(f["to"])
            if peer is not None:
                await peer.send_text(orjson.dumps({"type": "message", "message": msg}).decode())
            await ws.send_text(
                orjson.dumps(
                    {"type": "ack", "client_msg_id": f["client_msg_id"], "message": msg}
                ).decode()
            )
    except (WebSocketDisconnect, RuntimeError):
        pass
    finally:
        if peers.get(me) is ws:
            del peers[me]


async def healthz(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


app = Starlette(
    routes=[WebSocketRoute("/ws", relay), Route("/healthz", healthz)], lifespan=lifespan
)


async def drain(url: str, batch: int = 100) -> None:
    """Consume the quorum queue with manual acks, one ``multiple`` ack per ``batch`` (or per
    20 ms), until killed."""
    conn = await aiormq.connect(url)
    channel = await conn.channel()
    await declare(channel)
    await channel.basic_qos(prefetch_count=batch * 4)
    last: list[int] = [0, 0]  # newest tag, newest acked

    async def on_message(message: Any) -> None:
        last[0] = message.delivery_tag
        if last[0] - last[1] >= batch:
            last[1] = last[0]
            await channel.basic_ack(last[0], multiple=True, wait=False)

    await channel.basic_consume(HISTORY, on_message)
    print("draining", flush=True)
    while True:
        await asyncio.sleep(0.02)
        if last[0] > last[1]:
            last[1] = last[0]
            await channel.basic_ack(last[0], multiple=True, wait=False)


if __name__ == "__main__" and sys.argv[1:2] == ["drain"]:
    import uvloop

    uvloop.run(drain(sys.argv[2]))
