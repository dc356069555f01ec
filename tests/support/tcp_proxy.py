"""A small TCP proxy for fault injection (toxiproxy and tc netem are not available here).

It runs its own asyncio loop in a background thread, so sync and async tests drive it alike:

    with TcpProxy("127.0.0.1", upstream_port) as proxy:
        url = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
        proxy.set_delay(0.2)      # every chunk, both ways, waits 200 ms
        proxy.blackhole()         # connections stay open, nothing moves (a partition, a hung peer)
        proxy.hold_down()         # the client's bytes reach the server, none come back (lost acks)
        proxy.cut()               # every current connection is reset at once
        proxy.refuse()            # new connections are refused (closed at once)
        proxy.heal()              # back to normal

``stats`` counts accepted connections and cuts; ``active`` is the number of open pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


@dataclass
class ProxyStats:
    accepted: int = 0
    refused: int = 0
    cut: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class _Pair:
    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.tasks: list[asyncio.Task[None]] = []

    def reset(self) -> None:
        for w in (self.client, self.upstream):
            sock = w.get_extra_info("socket")
            if sock is not None:  # SO_LINGER 0: close sends an RST, like a dead peer's kernel
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            with contextlib.suppress(Exception):
                w.transport.abort()
        for t in self.tasks:
            t.cancel()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int, listen_port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._listen_port = listen_port
        self.port = 0
        self.delay = 0.0
        self._blackholed = False
        self._refusing = False
        self._pairs: set[_Pair] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="tcp-proxy"
        )
        self._server: asyncio.base_events.Server | None = None
        self._flowing: asyncio.Event | None = None
        self._down_flowing: asyncio.Event | None = None
        self.stats = ProxyStats()

    # -- control (thread-safe) --------------------------------------------------------------
    def start(self) -> TcpProxy:
        self._thread.start()
        self._call(self._start())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def set_delay(self, seconds: float) -> None:
        self.delay = max(0.0, seconds)

    def blackhole(self) -> None:
        """Stop moving bytes on every connection (new ones too); nothing is closed."""
        self._loop.call_soon_threadsafe(self._set_flow, False)

    def hold_down(self) -> None:
        """Hold every byte the upstream sends to the clients (new connections too) while the
        clients' bytes still reach it: what the server answers (a broker's confirms, its
        deliveries, its heartbeats) is lost from the client's side."""
        self._loop.call_soon_threadsafe(self._set_down_flow, False)

    def refuse(self) -> None:
        """Close new connections at once (connection reset); current ones are untouched."""
        self._refusing = True

    def cut(self) -> int:
        """Reset every current connection; the number cut."""
        return int(self._call(self._cut()))

    def heal(self) -> None:
        self._refusing = False
        self.delay = 0.0
        self._loop.call_soon_threadsafe(self._set_flow, True)
        self._loop.call_soon_threadsafe(self._set_down_flow, True)

    @property
    def active(self) -> int:
        return len(self._pairs)

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _call(self, coro: Any, timeout: float = 10.0) -> Any:
        fut: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return fut.result(timeout)

    # -- the loop side ----------------------------------------------------------------------
    def _set_flow(self, flowing: bool) -> None:
        assert self._flowing is not None
        self._blackholed = not flowing
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    def _set_down_flow(self, flowing: bool) -> None:
        assert self._down_flowing is not None
        if flowing:
            self._down_flowing.set()
        else:
            self._down_flowing.clear()

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._down_flowing = asyncio.Event()
        self._down_flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self._listen_port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()

    async def _cut(self) -> int:
        pairs = list(self._pairs)
        for p in pairs:
            p.reset()
        self._pairs.clear()
        self.stats.cut += len(pairs)
        return len(pairs)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.stats.refused += 1
            _Pair(writer, writer).reset()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            self.stats.refused += 1
            _Pair(writer, writer).reset()
            return
        self.stats.accepted += 1
        pair = _Pair(writer, up_writer)
        self._pairs.add(pair)
        pair.tasks = [
            asyncio.create_task(self._pump(reader, up_writer, pair, up=True)),
            asyncio.create_task(self._pump(up_reader, writer, pair, up=False)),
        ]

    async def _pump(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, pair: _Pair, up: bool
    ) -> None:
        assert self._flowing is not None and self._down_flowing is not None
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if self.delay:
                    await asyncio.sleep(self.delay)
                await self._flowing.wait()  # blackholed: hold the bytes, the peer hears nothing
                if not up:
                    await self._down_flowing.wait()  # held on the way back (hold_down)
                if pair not in self._pairs:
                    return
                writer.write(data)
                await writer.drain()
                if up:
                    self.stats.bytes_up += len(data)
                else:
                    self.stats.bytes_down += len(data)
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        # one side closed: close the other (half-close is not needed by our protocols)
        if pair in self._pairs:
            self._pairs.discard(pair)
            with contextlib.suppress(Exception):
                pair.client.close()
            with contextlib.suppress(Exception):
                pair.upstream.close()
            for t in pair.tasks:
                if t is not asyncio.current_task():
                    t.cancel()
