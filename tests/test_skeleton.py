"""The walking skeleton, one body for both run modes: a DM sent through one gateway reaches the
recipient on another gateway and is in history (MySQL in the scaled mode)."""

from __future__ import annotations

import asyncio
import signal

import httpx

from tests.support import services as svc
from tests.support.client import (
    PASSWORD,
    Stack,
    WsClient,
    direct_room,
    history,
    is_text,
    register_and_login,
    wait_for,
)
from tools.cluster import Cluster


def test_dm_crosses_gateways_and_lands_in_history(stack: Stack) -> None:
    alice = register_and_login(stack)
    bob = register_and_login(stack)
    room = direct_room(stack, alice, bob.username)
    assert room["kind"] == "direct" and sorted(room["members"]) == sorted(
        [alice.username, bob.username]
    )
    assert direct_room(stack, bob, alice.username)["id"] == room["id"]  # same room from either side

    async def scenario() -> tuple[dict, dict]:
        a = await WsClient.connect(stack, alice, gateway=0)
        b = await WsClient.connect(stack, bob, gateway=1)
        assert a.ready["user"]["username"] == alice.username
        assert room["id"] in [r["id"] for r in b.ready["rooms"]]
        first = await a.send_message("hello bob", to=bob.username)
        assert first["type"] == "ack", first
        got = await b.expect(is_text)
        assert got["message"] == first["message"]
        second = await a.send_message("second, by room id", room=room["id"])
        assert second["type"] == "ack", second
        got2 = await b.expect(is_text)
        assert got2["message"]["id"] == second["message"]["id"]
        reply = await b.send_message("hi alice", room=room["id"])
        assert (await a.expect(is_text))["message"] == reply["message"]
        await a.close()
        await b.close()
        return first["message"], second["message"]

    m1, m2 = asyncio.run(scenario())
    assert m1["room"] == room["id"] and m1["sender"] == alice.username and m1["body"] == "hello bob"
    assert m1["sent_at"].endswith("Z") and len(m1["sent_at"]) == 24

    def stored() -> list[dict]:
        r = history(stack, bob, room["id"])
        assert r.status_code == 200, r.text
        msgs = r.json()["messages"]
        return msgs if len(msgs) == 3 else []

    msgs = wait_for(stored, timeout=15)
    assert [m["id"] for m in msgs[:2]] == [m1["id"], m2["id"]]
    assert msgs[0] == m1
    if stack.name == "scaled":
        db = stack.extra["cluster"].extra["database"]
        assert (
            svc.mysql_count(db, f"SELECT COUNT(*) FROM messages WHERE room_id='{room['id']}'") == 3
        )


def test_every_service_reports_health(stack: Stack) -> None:
    urls = {stack.auth_url, stack.history_url, *stack.gateway_urls}
    with httpx.Client(timeout=10) as http:
        for url in urls:
            assert http.get(url + "/healthz").status_code == 200
            r = http.get(url + "/readyz")
            assert r.status_code == 200, (url, r.text)
            m = http.get(url + "/metrics")
            assert m.status_code == 200 and "# TYPE" in m.text


def test_dm_through_the_load_balancer(cluster_url: str, cluster) -> None:  # type: ignore[no-untyped-def]
    """nginx routes by path as API.md says, WebSocket upgrade included."""
    lb = Stack("lb", cluster_url, cluster_url, [cluster_url], base_url=cluster_url)
    alice = register_and_login(lb)
    bob = register_and_login(lb)

    async def scenario() -> dict:
        a = await WsClient.connect(lb, alice)
        b = await WsClient.connect(lb, bob)
        ack = await a.send_message("through nginx", to=bob.username)
        got = await b.expect(is_text)
        assert got["message"] == ack["message"]
        await a.close()
        await b.close()
        return dict(ack["message"])

    msg = asyncio.run(scenario())
    msgs = wait_for(lambda: history(lb, bob, msg["room"]).json()["messages"], timeout=15)
    assert [m["id"] for m in msgs] == [msg["id"]]
    with httpx.Client(timeout=10) as http:
        found = http.get(cluster_url + "/api/search", params={"q": "nginx"}, headers=bob.headers)
        assert found.status_code == 200, found.text
        assert [m["id"] for m in found.json()["messages"]] == [msg["id"]]
        me = http.get(cluster_url + "/api/auth/me", headers=alice.headers)
        assert me.status_code == 200 and me.json()["username"] == alice.username
        p = http.get(
            cluster_url + "/api/presence", params={"users": alice.username}, headers=bob.headers
        )
        assert p.status_code == 200
        assert http.get(cluster_url + "/metrics").status_code == 404  # not public
        assert http.get(cluster.gateway_procs[0].url + "/metrics").status_code == 200
        page = http.get(cluster_url + "/")
        assert page.status_code == 200 and "Content-Security-Policy" in page.text
        assert "content-security-policy" in {k.lower() for k in page.headers}


def test_issue_16_routes_through_the_load_balancer(cluster_url: str) -> None:
    """nginx sends the browser session's calls and the user search to auth: the session cookie
    (path /api/auth/session) round-trips through it, GET /api/users?prefix= is answered."""
    lb = Stack("lb", cluster_url, cluster_url, [cluster_url], base_url=cluster_url)
    alice = register_and_login(lb)
    with httpx.Client(timeout=10, base_url=cluster_url) as browser:
        cookie_mode = {"X-Chat-Session": "cookie", "Origin": cluster_url}
        r = browser.post(
            "/api/auth/login",
            json={"username": alice.username, "password": PASSWORD},
            headers=cookie_mode,
        )
        assert r.status_code == 200, r.text
        assert "refresh_token" not in r.json() and "chat_session" in browser.cookies
        refreshed = browser.post("/api/auth/session/refresh", headers=cookie_mode)
        assert refreshed.status_code == 200, refreshed.text
        assert refreshed.json()["username"] == alice.username
        found = browser.get(
            "/api/users",
            params={"prefix": alice.username},
            headers={"Authorization": f"Bearer {refreshed.json()['access_token']}"},
        )
        assert found.status_code == 200, found.text
        assert alice.username in [u["username"] for u in found.json()["users"]]
        out = browser.post("/api/auth/session/logout", headers=cookie_mode)
        assert out.status_code == 204
        assert browser.post("/api/auth/session/refresh", headers=cookie_mode).status_code == 401


def test_sigusr1_logs_every_task_and_the_process_keeps_serving(cluster: Cluster) -> None:
    """Operators' tool for a process that is alive but does nothing (docs/DEPLOY.md)."""
    gw = cluster.gateway_procs[0]
    assert gw.popen is not None
    before = gw.log_path.read_text(errors="replace").count("asyncio task dump")
    gw.popen.send_signal(signal.SIGUSR1)
    wait_for(
        lambda: gw.log_path.read_text(errors="replace").count("asyncio task dump") > before,
        10,
    )
    text = gw.log_path.read_text(errors="replace")
    assert "Presence._beat" in text  # a known long-lived task is named with its stack
    assert gw.popen.poll() is None
    assert httpx.get(gw.url + "/healthz", timeout=5).status_code == 200
