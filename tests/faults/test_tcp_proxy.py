"""The fault-injection proxy itself (tests/support/tcp_proxy.py): delay, cut, blackhole, refuse."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from tests.support.tcp_proxy import TcpProxy


class Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        try:
            while data := self.request.recv(65536):
                self.request.sendall(data)
        except ConnectionResetError:
            pass  # the proxy's cut


@pytest.fixture
def echo() -> Iterator[int]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def roundtrip(s: socket.socket, data: bytes = b"ping") -> bytes:
    s.sendall(data)
    return s.recv(65536)


def test_forwards_delays_cuts_blackholes_and_refuses(echo: int) -> None:
    with TcpProxy("127.0.0.1", echo) as proxy:
        s = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(s) == b"ping"
        assert proxy.active == 1

        proxy.set_delay(0.2)  # each direction
        t = time.monotonic()
        assert roundtrip(s) == b"ping"
        assert time.monotonic() - t >= 0.4
        proxy.heal()

        proxy.blackhole()  # open, silent
        s.sendall(b"lost?")
        s.settimeout(0.5)
        with pytest.raises(TimeoutError):
            s.recv(10)
        proxy.heal()  # held bytes flow again
        s.settimeout(5)
        assert s.recv(10) == b"lost?"

        assert proxy.cut() == 1  # reset, like a dead peer's kernel
        with pytest.raises((ConnectionResetError, BrokenPipeError, OSError)):
            s.sendall(b"x")
            if not s.recv(10):
                raise ConnectionResetError("closed")
        s.close()

        proxy.refuse()
        with pytest.raises((ConnectionResetError, OSError)):
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as r:
                r.sendall(b"x")
                if not r.recv(10):
                    raise ConnectionResetError("closed")
        proxy.heal()
        s2 = socket.create_connection(("127.0.0.1", proxy.port), timeout=5)
        assert roundtrip(s2) == b"ping"
        s2.close()
        assert proxy.stats.cut >= 1 and proxy.stats.refused >= 1
