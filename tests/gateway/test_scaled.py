"""Gateway behaviour that needs several real gateway processes on real RabbitMQ."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import struct
import time

from tests.support.client import Stack, WsClient, direct_room, history, is_text, register_and_login
from tools.cluster import Cluster


def test_kill_9_gateway_users_go_offline_and_clients_resume_without_gap(
    scaled: Stack, cluster: Cluster
) -> None:
    alice, bob = register_and_login(scaled), register_and_login(scaled)
    room = direct_room(scaled, alice, bob.username)
    victim = cluster.gateway_procs[1]

    async def scenario() -> None:
        a = await WsClient.connect(scaled, alice, gateway=0)
        b = await WsClient.connect(scaled, bob, gateway=1)
        await a.expect(lambda f: f["type"] == "presence" and f["online"], timeout=5)
        seen: list[str] = []
        for i in range(3):
            ack = await a.send_message(f"before {i}", room=room["id"])
            got = await b.expect(is_text)
            assert got["message"]["id"] == ack["message"]["id"]
            seen.append(got["message"]["id"])
        victim.signal(signal.SIGKILL)
        killed_at = time.monotonic()
        assert await b.close_code(timeout=5) in (None, 1006, 1011, 1012)
        sent_while_away = []
        for i in range(5):
            ack = await a.send_message(f"while away {i}", room=room["id"])
            assert ack["type"] == "ack", ack
            sent_while_away.append(ack["message"]["id"])
        off = await a.expect(lambda f: f["type"] == "presence" and not f["online"], timeout=15)
        assert off["username"] == bob.username
        assert time.monotonic() - killed_at <= 4 + 1 + 3  # timeout + heartbeat + slack
        # bob reconnects to another gateway and follows the resume rule (docs/PROTOCOL.md)
        b2 = await WsClient.connect(scaled, bob, gateway=2)
        live_after = await a.send_message("after reconnect", room=room["id"])
        await b2.expect(lambda f: f["type"] == "synced", timeout=10)
        r = history(scaled, bob, room["id"], after=seen[-1], limit=200)
        assert r.status_code == 200, r.text
        fetched = [m["id"] for m in r.json()["messages"]]
        live = await b2.expect(is_text)
        merged = list(dict.fromkeys(seen + fetched + [live["message"]["id"]]))
        assert merged == seen + sent_while_away + [live_after["message"]["id"]]
        assert len(fetched) == len(set(fetched))
        await a.close()
        await b2.close()

    try:
        asyncio.run(scenario())
    finally:
        victim.restart()


def test_sigterm_drains_and_closes_1012(scaled: Stack, cluster: Cluster) -> None:
    extra = cluster.add_gateway(99)
    stack = Stack("scaled", scaled.auth_url, scaled.history_url, [extra.url, *scaled.gateway_urls])
    alice, bob = register_and_login(stack), register_and_login(stack)
    room = direct_room(stack, alice, bob.username)

    async def scenario() -> None:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        ack = await a.send_message("last words", room=room["id"])
        extra.signal(signal.SIGTERM)
        assert await a.close_code(timeout=10) == 1012
        got = await b.expect(is_text)
        assert got["message"]["id"] == ack["message"]["id"]
        await b.close()

    try:
        asyncio.run(scenario())
        extra.popen.wait(15)  # type: ignore[union-attr]
        # uvicorn re-raises the signal after a clean shutdown: -15, not a kill
        assert extra.popen.returncode in (0, -signal.SIGTERM)  # type: ignore[union-attr]
    finally:
        extra.stop()
        cluster.procs.remove(extra)


def stalled_websocket(port: int, token: str) -> socket.socket:
    """A client that authenticates and then never reads (tiny receive buffer)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: http://127.0.0.1:{port}\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert head.startswith(b"HTTP/1.1 101"), head
    payload = json.dumps({"type": "auth", "token": token}).encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | 126]) + struct.pack("!H", len(payload)) + mask + masked)
    return sock


def read_close_code(sock: socket.socket, timeout: float = 20.0) -> int | None:
    """Drain a raw WebSocket until its close frame; the close code (None if cut)."""
    sock.settimeout(timeout)
    buf = b""

    def need(n: int) -> bytes:
        nonlocal buf
        while len(buf) < n:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed without a close frame")
            buf += chunk
        out, buf = buf[:n], buf[n:]
        return out

    try:
        while True:
            b0, b1 = need(2)
            length = b1 & 0x7F
            if length == 126:
                length = struct.unpack("!H", need(2))[0]
            elif length == 127:
                length = struct.unpack("!Q", need(8))[0]
            data = need(length)
            if b0 & 0x0F == 0x8:
                return int(struct.unpack("!H", data[:2])[0]) if len(data) >= 2 else None
    except ConnectionError:
        return None


def test_slow_reader_does_not_slow_the_others(scaled: Stack) -> None:
    owner = register_and_login(scaled)
    fast, slow = register_and_login(scaled), register_and_login(scaled)
    senders = [register_and_login(scaled) for _ in range(3)]
    with scaled.http() as http:
        r = http.post(
            scaled.url("/api/rooms"),
            json={"name": "firehose", "members": [u.username for u in (fast, slow, *senders)]},
            headers=owner.headers,
        )
        room = r.json()

    async def scenario() -> None:
        port = int(scaled.gateway_urls[0].rsplit(":", 1)[1])
        sock = stalled_websocket(port, slow.access_token)
        f = await WsClient.connect(scaled, fast, gateway=0)  # same gateway as the slow one
        clients = [await WsClient.connect(scaled, u, gateway=i) for i, u in enumerate(senders)]
        body = "z" * 3900
        total = 0
        started = time.monotonic()
        got = 0

        async def read_fast() -> None:  # the fast reader reads all along
            nonlocal got
            while True:
                frame = await f.recv(timeout=30)
                if is_text(frame):
                    got += 1

        reader = asyncio.create_task(read_fast())
        # the senders pipeline their sends; the fast reader must keep up all along
        for burst in range(20):
            for c in clients:
                for _ in range(30):
                    await c.send(
                        {
                            "type": "send",
                            "room": room["id"],
                            "body": body,
                            "client_msg_id": f"{burst}-{total}",
                        }
                    )
                    total += 1
            for c in clients:
                while sum(1 for fr in c.frames if fr["type"] in ("ack", "error")) < total // 3:
                    await c.recv(timeout=10)
            await asyncio.sleep(0.3)  # stay under the per-connection rate limit
        deadline = time.monotonic() + 30
        while got < total and time.monotonic() < deadline and not reader.done():
            await asyncio.sleep(0.05)
        elapsed = time.monotonic() - started
        reader.cancel()
        assert got == total, (got, total)
        # the slow reader was cut off instead of holding the gateway back
        assert read_close_code(sock) == 1013
        assert elapsed < 60
        for c in (f, *clients):
            await c.close()

    asyncio.run(scenario())
