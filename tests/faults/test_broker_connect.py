"""A broker address that accepts the TCP connection but never answers the AMQP handshake (a
hung broker, or a path that drops everything after the SYN) must fail in bounded time, not hang
the service's start or its reconnect loop. The "broker" here is a silent listener of our own: a
real RabbitMQ would close the socket itself after its own handshake timeout, which a partitioned
client never hears."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from services.common.bus.amqp import CONNECT_TIMEOUT, AmqpBus


@pytest.fixture
def silent_broker() -> Iterator[tuple[int, list[socket.socket]]]:
    """Accepts connections and never sends or closes anything."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield int(server.getsockname()[1]), held
    stop.set()
    thread.join(2)
    for conn in held:
        conn.close()
    server.close()


def test_a_handshake_that_is_never_answered_fails_in_bounded_time(
    silent_broker: tuple[int, list[socket.socket]],
) -> None:
    port, held = silent_broker
    bus = AmqpBus(f"amqp://guest:guest@127.0.0.1:{port}/")

    async def attempt() -> None:
        # the outer bound only keeps a regression from hanging the suite
        await asyncio.wait_for(bus.connect(), CONNECT_TIMEOUT * 3)

    t0 = time.monotonic()
    with pytest.raises(Exception) as failure:
        asyncio.run(attempt())
    took = time.monotonic() - t0
    assert held, "the client never connected"  # the TCP connection was made: the handshake hung
    assert CONNECT_TIMEOUT - 1 < took < CONNECT_TIMEOUT + 5, (took, repr(failure.value))
