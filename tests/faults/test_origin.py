"""Scenario 10: cross-site WebSocket hijacking. An upgrade whose Origin is not in the configured
allow-list (CHAT_ALLOWED_ORIGINS; tools/cluster.py allows http://127.0.0.1, http://localhost and
the load balancer's own origin) is refused with 403 before any WebSocket exists, directly on
every gateway and through the load balancer.

(tests/gateway/test_protocol.py checks one foreign and a missing Origin; these are the tricky
ones: look-alike hosts, "null", other schemes and ports, and a Host header made to match.)
"""

from __future__ import annotations

import base64
import os
import socket

import pytest

from tests.support.client import Stack
from tools.cluster import Cluster


def upgrade_status(port: int, origin: str | None, host: str | None = None) -> int:
    """Status line of a raw upgrade request (so any Origin/Host can be sent)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET /ws HTTP/1.1",
        f"Host: {host or f'127.0.0.1:{port}'}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if origin is not None:
        lines.append(f"Origin: {origin}")
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        head = b""
        while b"\r\n" not in head:
            chunk = s.recv(1024)
            if not chunk:
                break
            head += chunk
    return int(head.split(b" ", 2)[1])


def foreign_origins(port: int) -> list[tuple[str, str | None, str | None]]:
    """(case, Origin, Host) that must all be refused."""
    return [
        ("foreign", "http://evil.example", None),
        ("missing", None, None),
        ("null", "null", None),
        ("look-alike suffix", "http://127.0.0.1.evil.example", None),
        ("look-alike prefix", "http://evil-127.0.0.1", None),
        ("allowed host, other port", "http://127.0.0.1:1", None),
        ("userinfo trick", f"http://127.0.0.1:{port}@evil.example", None),
        ("other scheme", "file://", None),
        ("trailing junk", "http://localhost.", None),
        ("empty", "", None),
        # a page of a DNS-rebinding attacker: Host and Origin both name the attacker's domain
        ("host made to match", f"http://evil.example:{port}", f"evil.example:{port}"),
    ]


def gateway_ports(stack: Stack) -> list[int]:
    return [int(u.rsplit(":", 1)[1]) for u in stack.gateway_urls]


def test_allowed_origins_upgrade(scaled: Stack, cluster: Cluster) -> None:
    for port in gateway_ports(scaled):
        assert upgrade_status(port, "http://127.0.0.1") == 101
        assert upgrade_status(port, "http://localhost") == 101
    if cluster.port:
        assert upgrade_status(cluster.port, cluster.base_url) == 101


@pytest.mark.parametrize("case", [c for c, _, _ in foreign_origins(0)])
def test_foreign_or_missing_origin_is_refused_403(
    scaled: Stack, cluster: Cluster, case: str
) -> None:
    ports = gateway_ports(scaled) + ([cluster.port] if cluster.port else [])
    got = {}
    for port in ports:
        _, origin, host = next(c for c in foreign_origins(port) if c[0] == case)
        got[port] = upgrade_status(port, origin, host)
    assert set(got.values()) == {403}, f"{case}: {got}"
