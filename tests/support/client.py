"""Test clients speaking the public API: REST with httpx, WebSocket with `websockets`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tools.seed import PASSWORD, uname

TEST_ORIGIN = "http://127.0.0.1"
__all__ = ["PASSWORD", "Stack", "User", "WsClient", "uname"]


@dataclass
class Stack:
    """Where each service of a running system answers (API.md's path routing)."""

    name: str
    auth_url: str
    history_url: str
    gateway_urls: list[str]
    base_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str) -> str:
        if path.startswith(("/api/auth", "/api/users", "/api/rooms")):
            return self.auth_url + path
        if path.startswith("/api/history"):
            return self.history_url + path
        return self.gateway_urls[0] + path

    def ws_url(self, i: int = 0) -> str:
        base = self.gateway_urls[i % len(self.gateway_urls)]
        return base.replace("http://", "ws://") + "/ws"

    def origin(self, i: int = 0) -> str:
        """An Origin the system under test allows (tests/conftest.py and tools/cluster.py put
        it in CHAT_ALLOWED_ORIGINS)."""
        return TEST_ORIGIN

    def http(self) -> httpx.Client:
        return httpx.Client(timeout=30)


@dataclass
class User:
    username: str
    id: str
    access_token: str
    refresh_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


def register_and_login(stack: Stack, username: str | None = None, password: str = PASSWORD) -> User:
    username = username or uname()
    with stack.http() as http:
        r = http.post(
            stack.url("/api/auth/register"), json={"username": username, "password": password}
        )
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        r = http.post(
            stack.url("/api/auth/login"), json={"username": username, "password": password}
        )
        assert r.status_code == 200, r.text
        body = r.json()
    return User(username.lower(), uid, body["access_token"], body["refresh_token"])


def direct_room(stack: Stack, user: User, other: str) -> dict[str, Any]:
    with stack.http() as http:
        r = http.post(
            stack.url("/api/rooms/direct"), json={"username": other}, headers=user.headers
        )
        assert r.status_code == 200, r.text
        return dict(r.json())


def history(stack: Stack, user: User, room: str, **params: Any) -> httpx.Response:
    with stack.http() as http:
        return http.get(stack.url(f"/api/history/{room}"), params=params, headers=user.headers)


def is_text(frame: dict[str, Any]) -> bool:
    """A ``message`` frame of a text message (not a notice of what happened in the room)."""
    return frame.get("type") == "message" and frame["message"].get("kind", "text") == "text"


def is_notice(frame: dict[str, Any]) -> bool:
    return frame.get("type") == "message" and frame["message"].get("kind") == "notice"


def wait_for(pred: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = pred()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


class WsClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []  # everything received
        self.unmatched: list[dict[str, Any]] = []  # received, not yet returned by expect()
        self.ready: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls, stack: Stack, user: User | None, gateway: int = 0, origin: str | None = None
    ) -> WsClient:
        ws = await websockets.connect(
            stack.ws_url(gateway),
            origin=origin or stack.origin(gateway),
            max_size=2**22,  # type: ignore[arg-type]
            open_timeout=10,
        )
        client = cls(ws)
        if user is not None:
            await client.send({"type": "auth", "token": user.access_token})
            client.ready = await client.expect(lambda f: f["type"] == "ready")
        return client

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(orjson.dumps(frame).decode())

    async def recv(self, timeout: float = 10.0) -> dict[str, Any]:
        raw = await asyncio.wait_for(self.ws.recv(), timeout)
        frame = orjson.loads(raw)
        self.frames.append(frame)
        return dict(frame)

    async def expect(
        self, pred: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """The oldest not-yet-matched frame matching pred, waiting for it if needed."""
        for i, frame in enumerate(self.unmatched):
            if pred(frame):
                del self.unmatched[i]
                return frame
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no matching frame within {timeout}s; got {self.frames[-5:]}")
            try:
                frame = await self.recv(left)
            except TimeoutError:
                raise AssertionError(
                    f"no matching frame within {timeout}s; got {self.frames[-5:]}"
                ) from None
            if pred(frame):
                return frame
            self.unmatched.append(frame)

    async def send_message(
        self,
        body: str,
        *,
        room: str | None = None,
        to: str | None = None,
        cmid: str | None = None,
        timeout: float = 10.0,
        **extra: Any,
    ) -> dict[str, Any]:
        cmid = cmid or str(uuid.uuid4())
        frame: dict[str, Any] = {"type": "send", "body": body, "client_msg_id": cmid, **extra}
        if room is not None:
            frame["room"] = room
        if to is not None:
            frame["to"] = to
        await self.send(frame)
        return await self.expect(
            lambda f: f.get("client_msg_id") == cmid and f["type"] in ("ack", "error"), timeout
        )

    async def close_code(self, timeout: float = 10.0) -> int | None:
        """Read until the server closes; the close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None

    async def close(self) -> None:
        await self.ws.close()
