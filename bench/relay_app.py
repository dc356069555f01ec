"""The WebSocket ceiling: a tiny Starlette relay with no broker, no auth, no database.

    uvicorn bench.relay_app:app --ws websockets-sansio   (started by bench/ceiling.py)

A client says ``{"type":"hello","id":X}`` and gets ``ready``; a ``send`` frame
``{"type":"send","to":Y,"body","client_msg_id"}`` is forwarded to Y as
``{"type":"message","message":{...}}`` and acked to the sender, like the gateway's frames.
Same server stack as the gateway (uvicorn, uvloop, httptools, websockets-sansio, orjson).
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

peers: dict[str, WebSocket] = {}


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


app = Starlette(routes=[WebSocketRoute("/ws", relay), Route("/healthz", healthz)])
