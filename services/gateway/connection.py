"""One WebSocket session: a bounded outgoing queue and a token bucket.

Frames to a socket go through a bounded deque drained by a writer task that exists only while
there is something to send (an idle connection holds no task of its own beyond its reader, which
keeps memory per idle socket low). A reader that falls behind (its queue fills) is disconnected
instead of growing the gateway's memory or stalling the fan-out to everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections import deque
from typing import Any

import orjson
from starlette.websockets import WebSocket, WebSocketState

CLOSE_TOO_SLOW = 1013  # "try again later": the client reconnects and resumes

_ids = itertools.count(1)


class TokenBucket:
    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Connection:
    __slots__ = (
        "_writer",
        "bucket",
        "close_code",
        "closed",
        "held",
        "id",
        "inflight",
        "outbox",
        "queue_max",
        "sid",
        "strikes",
        "subs",
        "user_id",
        "username",
        "ws",
    )

    def __init__(self, ws: WebSocket, queue_max: int, rate: float, burst: int) -> None:
        self.ws = ws
        self.id = f"c{next(_ids)}"
        self.user_id = ""
        self.username = ""
        self.sid = ""
        self.queue_max = queue_max
        self.outbox: deque[str | tuple[int, str]] = deque()
        self.bucket = TokenBucket(rate, burst)
        self.strikes = 0
        self.closed = False
        self.close_code: int | None = None
        self.inflight: set[asyncio.Task[Any]] = set()
        self.held: list[str] | None = None
        self.subs: tuple[str, ...] | None = None  # presence_sub: whom else to hear of
        self._writer: asyncio.Task[None] | None = None

    def hold(self) -> None:
        """Keep frames back until ``release_with`` (so that ``ready`` comes first)."""
        self.held = []

    def release_with(self, first: dict[str, Any]) -> None:
        held, self.held = self.held or [], None
        self.send(first)
        for text in held:
            self.send_text(text)

    def _kick(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_loop())

    async def _write_loop(self) -> None:
        try:
            while self.outbox:
                item = self.outbox.popleft()
                if isinstance(item, tuple):  # close after what was queued before it
                    self.outbox.clear()
                    with contextlib.suppress(Exception):
                        await self.ws.close(item[0], item[1])
                    return
                await self.ws.send_text(item)
        except Exception:  # the peer went away: the reader notices and cleans up
            self.closed = True
            self.outbox.clear()

    def send(self, frame: dict[str, Any]) -> None:
        self.send_text(orjson.dumps(frame).decode())

    def send_text(self, text: str) -> None:
        if self.closed:
            return
        if self.held is not None:
            if len(self.held) >= self.queue_max:
                self.close_soon(CLOSE_TOO_SLOW, "reader too slow")
                return
            self.held.append(text)
            return
        if len(self.outbox) >= self.queue_max:
            self.close_soon(CLOSE_TOO_SLOW, "reader too slow")
            return
        self.outbox.append(text)
        self._kick()

    def close_after_queued(self, code: int, reason: str = "") -> None:
        """Close once the frames already queued (e.g. the errors explaining why) are sent."""
        if self.closed:
            return
        self.outbox.append((code, reason))
        self.closed = True
        self.close_code = code
        self._kick()

    def close_soon(self, code: int, reason: str = "") -> None:
        """Close from anywhere (fan-out, revocation) without awaiting the socket."""
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.outbox.clear()
        asyncio.get_running_loop().create_task(self._close(code, reason))

    async def _close(self, code: int, reason: str) -> None:
        if self._writer is not None:
            self._writer.cancel()
        with contextlib.suppress(Exception):
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason)

    async def flush_and_close(self, code: int, reason: str, timeout: float) -> None:
        """Graceful: wait for in-flight sends, let queued frames go out, then close."""
        if self.inflight:
            await asyncio.wait(list(self.inflight), timeout=timeout)
        if not self.closed and self._writer is not None and not self._writer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._writer), timeout)
        self.closed = True
        self.close_code = code
        with contextlib.suppress(Exception):
            if self.ws.application_state == WebSocketState.CONNECTED:
                await self.ws.close(code, reason)

    async def stop_writer(self) -> None:
        self.closed = True
        writer = self._writer
        if writer is not None and self.close_code is not None and not writer.done():
            # a close is queued behind the frames explaining it: let them go out first
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(writer), 2.0)
        if writer is not None and not writer.done():
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer
