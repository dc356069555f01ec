"""The three WebSocket protocols one load generator speaks, so every system gets the same clients:

- ``chat``: our gateway (API.md): auth frame, ``send`` frames, ``ack`` and ``message`` frames;
- ``relay``: the raw Starlette relay of bench/relay_app.py (same frames, no broker, no auth);
- ``socketio``: python-socketio's Engine.IO v4 / Socket.IO v5 over a plain WebSocket
  (``42[...]`` events, ``43<id>[...]`` acks, ``2``/``3`` ping/pong).

Bodies carry the load generator's own timestamps (``<scheduled_ns> <sent_ns> <seq>``), so the
latency is taken in the generator: send → receipt of the ``message`` frame by the receiver.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import orjson
import websockets
from websockets.asyncio.client import ClientConnection

ACK, MESSAGE, ERROR, OTHER = 1, 2, 3, 0


@dataclass
class Incoming:
    kind: int
    body: str = ""  # MESSAGE: the message body
    ident: str = ""  # ACK / ERROR: the client_msg_id (or ack id)
    code: str = ""  # ERROR: the code


async def ws_connect(
    url: str, origin: str | None, compression: str | None = None
) -> ClientConnection:
    return await websockets.connect(
        url,
        origin=origin,  # type: ignore[arg-type]
        compression=compression,  # None: no permessage-deflate ("deflate": as browsers do)
        max_size=2**22,
        max_queue=4096,
        ping_interval=None,  # the server pings; the client answers by itself
        open_timeout=60,
        close_timeout=2,
    )


class Protocol:
    name = "base"
    compression: str | None = None

    def ws_url(self, http_url: str) -> str:
        return http_url.replace("http://", "ws://") + "/ws"

    async def open(self, http_url: str, auth: str) -> ClientConnection:
        raise NotImplementedError

    def send_frame(self, target: str, body: str, cmid: str, seq: int) -> str:
        raise NotImplementedError

    def parse(self, raw: str | bytes) -> Incoming:
        raise NotImplementedError

    async def on_raw(self, ws: ClientConnection, raw: str | bytes) -> bool:
        """Protocol housekeeping (socket.io pings); True if the frame is consumed."""
        return False


async def _until(ws: ClientConnection, pred: Any, timeout: float = 60.0) -> Any:
    async with asyncio.timeout(timeout):
        while True:
            raw = await ws.recv()
            if pred(raw):
                return raw


class ChatProtocol(Protocol):
    name = "chat"

    async def open(self, http_url: str, auth: str) -> ClientConnection:
        ws = await ws_connect(self.ws_url(http_url), http_url, self.compression)
        await ws.send(orjson.dumps({"type": "auth", "token": auth}).decode())
        await _until(ws, lambda raw: b'"type":"ready"' in _b(raw))
        return ws

    def send_frame(self, target: str, body: str, cmid: str, seq: int) -> str:
        return orjson.dumps(
            {"type": "send", "room": target, "body": body, "client_msg_id": cmid}
        ).decode()

    def parse(self, raw: str | bytes) -> Incoming:
        f = orjson.loads(raw)
        t = f.get("type")
        if t == "message":
            return Incoming(MESSAGE, body=f["message"]["body"])
        if t == "ack":
            return Incoming(ACK, ident=f.get("client_msg_id", ""))
        if t == "error":
            return Incoming(ERROR, ident=f.get("client_msg_id") or "", code=f.get("code", ""))
        return Incoming(OTHER)


class RelayProtocol(ChatProtocol):
    name = "relay"

    async def open(self, http_url: str, auth: str) -> ClientConnection:
        ws = await ws_connect(self.ws_url(http_url), http_url)
        await ws.send(orjson.dumps({"type": "hello", "id": auth}).decode())
        await _until(ws, lambda raw: b'"type":"ready"' in _b(raw))
        return ws

    def send_frame(self, target: str, body: str, cmid: str, seq: int) -> str:
        return orjson.dumps(
            {"type": "send", "to": target, "body": body, "client_msg_id": cmid}
        ).decode()


class SocketIOProtocol(Protocol):
    """Socket.IO v5 on Engine.IO v4, WebSocket transport only (no long-polling upgrade)."""

    name = "socketio"

    def ws_url(self, http_url: str) -> str:
        return http_url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"

    async def open(self, http_url: str, auth: str) -> ClientConnection:
        ws = await ws_connect(self.ws_url(http_url), http_url)
        await _until(ws, lambda raw: _s(raw).startswith("0"))  # engine.io open
        await ws.send("40" + orjson.dumps({"room": auth}).decode())  # socket.io connect
        await _until(ws, lambda raw: _s(raw).startswith("40"))
        return ws

    def send_frame(self, target: str, body: str, cmid: str, seq: int) -> str:
        payload = orjson.dumps(["send", {"room": target, "body": body, "client_msg_id": cmid}])
        return f"42{seq}" + payload.decode()

    def parse(self, raw: str | bytes) -> Incoming:
        s = _s(raw)
        if s.startswith("42["):
            ev = orjson.loads(s[2:])
            if ev and ev[0] == "message":
                return Incoming(MESSAGE, body=ev[1]["message"]["body"])
            return Incoming(OTHER)
        if s.startswith("43"):
            i = s.index("[")
            return Incoming(ACK, ident=s[2:i])
        return Incoming(OTHER)

    async def on_raw(self, ws: ClientConnection, raw: str | bytes) -> bool:
        if raw == "2":
            await ws.send("3")
            return True
        return False


def _b(raw: str | bytes) -> bytes:
    return raw.encode() if isinstance(raw, str) else raw


def _s(raw: str | bytes) -> str:
    return raw if isinstance(raw, str) else raw.decode()


PROTOCOLS: dict[str, type[Protocol]] = {
    "chat": ChatProtocol,
    "relay": RelayProtocol,
    "socketio": SocketIOProtocol,
}
