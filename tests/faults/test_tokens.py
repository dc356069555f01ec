"""Scenario 8: token attacks against every service of the running scaled cluster: REST on auth,
history and presence (401 JSON with ``WWW-Authenticate: Bearer``) and the WebSocket (close
4001, never ``ready``).

tests/auth/test_tokens.py attacks the auth app in-process; this checks that the gateway and
history processes, which verify tokens locally, refuse exactly the same things, and that a
logged-out session is dead on all of them at once.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import jwt
import pytest

from tests.support.client import Stack, User, WsClient, direct_room, register_and_login
from tools.cluster import Cluster


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def forgeries(secret: str, user: User) -> dict[str, Callable[[], str]]:
    good = user.access_token
    base = _claims(good)
    now = int(time.time())

    def sign(claims: dict[str, Any], key: str = secret, alg: str = "HS256", **hdr: Any) -> str:
        return jwt.encode(claims, key, algorithm=alg, headers=hdr or None)

    def alg_none() -> str:
        head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{head}.{_b64(json.dumps(base).encode())}."

    def alg_none_signed() -> str:  # "none" header, the genuine signature kept
        head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{head}.{good.split('.')[1]}.{good.split('.')[2]}"

    def rs256_header() -> str:  # algorithm confusion: an RS256 header over an HMAC signature
        head = _b64(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
        body = good.split(".")[1]
        import hashlib
        import hmac

        sig = hmac.new(secret.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
        return f"{head}.{body}.{_b64(sig)}"

    def tampered() -> str:
        head, _, sig = good.split(".")
        evil = dict(base, sub="0" * 26, name="admin")
        return f"{head}.{_b64(json.dumps(evil).encode())}.{sig}"

    def stripped() -> str:
        head, body, _ = good.split(".")
        return f"{head}.{body}."

    return {
        "alg_none": alg_none,
        "alg_none_signed": alg_none_signed,
        "alg_rs256_confusion": rs256_header,
        "hs512_same_key": lambda: sign(base, alg="HS512"),
        "wrong_key": lambda: sign(base, key="an-attacker-secret-" + "k" * 40),
        "tampered_payload": tampered,
        "stripped_signature": stripped,
        "expired": lambda: sign(dict(base, iat=now - 7200, nbf=now - 7200, exp=now - 60)),
        "future_nbf": lambda: sign(dict(base, nbf=now + 600, iat=now)),
        "future_iat_only": lambda: sign(dict(base, iat=now + 600)),
        "wrong_aud": lambda: sign(dict(base, aud="another-service")),
        "wrong_iss": lambda: sign(dict(base, iss="https://evil.example")),
        "no_exp": lambda: sign({k: v for k, v in base.items() if k != "exp"}),
        "no_sid": lambda: sign({k: v for k, v in base.items() if k != "sid"}),
        "typ_refresh": lambda: sign(dict(base, typ="refresh")),
        "refresh_token_as_access": lambda: user.refresh_token,
        "garbage": lambda: "not.a.token",
        "empty": lambda: "",
        "huge": lambda: "a" * 5_000,  # over the 4096 the verifier accepts
        "oversized_header": lambda: "a" * 20_000,  # over the servers' header limit: 431 is fine
        "sub_is_a_number": lambda: sign(dict(base, sub=12345)),
    }


ATTACKS = list(
    forgeries(
        "x" * 40, User("u", "0" * 26, jwt.encode({"sub": "x"}, "k" * 32, algorithm="HS256"), "rt_x")
    ).keys()
)


def rest_targets(stack: Stack, room: str) -> list[tuple[str, str]]:
    return [
        ("auth", stack.auth_url + "/api/auth/me"),
        ("rooms", stack.auth_url + "/api/rooms"),
        ("history", stack.history_url + f"/api/history/{room}"),
        ("presence", stack.gateway_urls[0] + "/api/presence"),
    ]


def check_rest(http: httpx.Client, targets: list[tuple[str, str]], token: str) -> list[str]:
    problems = []
    for name, url in targets:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        r = http.get(url, headers=headers)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code == 431 and len(token) > 8000:
            continue  # the HTTP server refuses the header before any app code: fine
        if r.status_code != 401:
            problems.append(f"{name}: {r.status_code}")
        elif not isinstance(body.get("error", {}).get("code"), str):
            problems.append(f"{name}: 401 without a JSON error")
        elif not r.headers.get("www-authenticate", "").lower().startswith("bearer"):
            problems.append(f"{name}: 401 without WWW-Authenticate: Bearer")
    return problems


async def ws_verdict(stack: Stack, token: str, gateway: int) -> int | str | None:
    c = await WsClient.connect(stack, None, gateway=gateway)
    await c.send({"type": "auth", "token": token})
    try:
        frame = await c.recv(timeout=5)
        return f"got {frame.get('type')}"
    except Exception:
        pass
    return c.ws.close_code


@pytest.fixture(scope="module")
def victim(scaled: Stack) -> tuple[User, str]:
    user, other = register_and_login(scaled), register_and_login(scaled)
    room = direct_room(scaled, user, other.username)
    return user, room["id"]


def test_genuine_token_works_everywhere(scaled: Stack, victim: tuple[User, str]) -> None:
    user, room = victim
    with httpx.Client(timeout=10) as http:
        for name, url in rest_targets(scaled, room):
            assert http.get(url, headers=user.headers).status_code == 200, name

    async def ws() -> None:
        c = await WsClient.connect(scaled, user, gateway=1)
        assert c.ready["user"]["id"] == user.id
        await c.close()

    asyncio.run(ws())


@pytest.mark.parametrize("attack", ATTACKS)
def test_token_attack_is_refused_by_every_service(
    scaled: Stack, cluster: Cluster, victim: tuple[User, str], attack: str
) -> None:
    user, room = victim
    token = forgeries(cluster.secret, user)[attack]()
    with httpx.Client(timeout=10) as http:
        problems = check_rest(http, rest_targets(scaled, room), token)
    for g in range(len(scaled.gateway_urls)):
        code = asyncio.run(ws_verdict(scaled, token, g))
        if code != 4001:
            problems.append(f"ws gateway{g + 1}: {code}")
    assert not problems, f"{attack}: {problems}"


def test_tokens_of_a_logged_out_session_are_dead_everywhere(scaled: Stack) -> None:
    user, other = register_and_login(scaled), register_and_login(scaled)
    room = direct_room(scaled, user, other.username)["id"]

    async def open_socket() -> WsClient:
        return await WsClient.connect(scaled, user, gateway=2)

    async def scenario() -> list[str]:
        live = await open_socket()
        with httpx.Client(timeout=10) as http:
            r = http.post(scaled.auth_url + "/api/auth/logout", headers=user.headers)
            assert r.status_code == 204, r.text
            problems = check_rest(http, rest_targets(scaled, room), user.access_token)
            r = http.post(
                scaled.auth_url + "/api/auth/refresh", json={"refresh_token": user.refresh_token}
            )
            if r.status_code != 401:
                problems.append(f"refresh after logout: {r.status_code}")
        code = await live.close_code(timeout=5)
        if code != 4001:
            problems.append(f"open socket after logout: {code}")
        for g in range(len(scaled.gateway_urls)):
            v = await ws_verdict(scaled, user.access_token, g)
            if v != 4001:
                problems.append(f"ws gateway{g + 1} after logout: {v}")
        return problems

    problems = asyncio.run(scenario())
    assert not problems, problems
