"""The peer: the same chat scenario on python-socketio with ``AsyncAioPikaManager``.

    BENCH_AMQP_URL=amqp://... uvicorn bench.peer_app:app --ws websockets-sansio

A client connects with ``{"room": R}`` as its auth payload and enters room R. The ``send``
event ``{"room","body","client_msg_id"}`` is emitted to the room (skipping the sender) through
the manager, i.e. published to RabbitMQ and delivered by every server process that has a
member, then acknowledged to the sender with the message (the socket.io ack). The library's
defaults are kept (its manager publishes persistent messages on a confirming channel and
consumes with prefetch 1): this is python-socketio as its documentation sets it up.
"""

from __future__ import annotations

import os
import time
from typing import Any

import orjson
import socketio
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route


class _Json:
    """orjson for the packets, as our gateway uses."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        return orjson.loads(s)


mgr = socketio.AsyncAioPikaManager(os.environ["BENCH_AMQP_URL"], channel="bench-socketio")
sio = socketio.AsyncServer(
    async_mode="asgi",
    client_manager=mgr,
    cors_allowed_origins="*",
    transports=["websocket"],
    json=_Json,
)


@sio.event
async def connect(sid: str, environ: dict[str, Any], auth: dict[str, Any] | None) -> None:
    if auth and auth.get("room"):
        await sio.enter_room(sid, str(auth["room"]))


@sio.event
async def send(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    msg = {
        "id": data["client_msg_id"],
        "room": data["room"],
        "body": data["body"],
        "client_msg_id": data["client_msg_id"],
        "sent_ms": int(time.time() * 1000),
    }
    await sio.emit("message", {"message": msg}, room=data["room"], skip_sid=sid)
    return {"message": msg}


async def healthz(request: object) -> PlainTextResponse:
    return PlainTextResponse("ok")


async def warm_up() -> None:
    """One emit before any client: the manager opens its publisher lazily, and concurrent first
    emits race on that (the later ones find no exchange yet, are retried once and dropped)."""
    await sio.emit("warmup", {}, room="nobody")


app = socketio.ASGIApp(
    sio, other_asgi_app=Starlette(routes=[Route("/healthz", healthz)]), on_startup=warm_up
)
