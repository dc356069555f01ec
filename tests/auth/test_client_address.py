"""Which client address the login limits see in the all-in-one server (issue 16), on the real
process (uvicorn, a2wsgi, Flask):

- by default it believes no ``X-Forwarded-For``: a client sending a different forged value per
  attempt is still one address (before, ``forwarded_allow_ips="*"`` let it escape the
  per-address limits entirely);
- with ``CHAT_FORWARDED_ALLOW_IPS`` naming the proxy in front, the header (and
  ``X-Forwarded-Proto``: a ``Secure`` session cookie) is believed from that proxy;
- two accounts behind one address: one mistyping 20+ times never locks the other out.

Clients use their own loopback addresses (127.0.0.0/8), so nothing here touches other tests.
"""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import FAST_ENV
from tests.support.allinone import AllInOne
from tests.support.client import PASSWORD, Stack, register_and_login

PAIR = 4  # CHAT_LOGIN_FAIL_PER_ACCOUNT_IP_MINUTE here
ACCOUNTS = 5  # CHAT_LOGIN_FAIL_ACCOUNTS_PER_IP_HOUR here


def start(trusted: str | None) -> tuple[AllInOne, Path]:
    tmp = Path(tempfile.mkdtemp(prefix="chat-xff-"))
    env = dict(
        FAST_ENV,
        CHAT_LOGIN_FAIL_PER_ACCOUNT_IP_MINUTE=str(PAIR),
        CHAT_LOGIN_FAIL_ACCOUNTS_PER_IP_HOUR=str(ACCOUNTS),
    )
    if trusted is not None:
        env["CHAT_FORWARDED_ALLOW_IPS"] = trusted
    return AllInOne(tmp, env).start(), tmp


@pytest.fixture(scope="module")
def default_server() -> Iterator[Stack]:
    server, tmp = start(None)
    yield server.stack()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def behind_proxy() -> Iterator[Stack]:
    """As if a proxy on this machine fronted it: loopback peers are trusted."""
    server, tmp = start("127.0.0.0/8")
    yield server.stack()
    server.stop()
    shutil.rmtree(tmp, ignore_errors=True)


def client_from() -> httpx.Client:
    addr = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(1, 254)}"
    return httpx.Client(transport=httpx.HTTPTransport(local_address=addr), timeout=30)


def forged() -> str:
    return f"10.{random.randint(0, 255)}.{random.randint(0, 255)}.{random.randint(1, 254)}"


def login(http: httpx.Client, stack: Stack, name: str, password: str, **headers: str) -> int:
    r = http.post(
        stack.url("/api/auth/login"),
        json={"username": name, "password": password},
        headers=headers,
    )
    assert r.status_code in (200, 401, 429), r.text
    return r.status_code


def test_a_forged_forwarded_for_is_ignored_by_default(default_server: Stack) -> None:
    stack = default_server
    target = register_and_login(stack).username
    with client_from() as http:
        statuses = [
            login(http, stack, target, f"guess {i}", **{"X-Forwarded-For": forged()})
            for i in range(PAIR + 3)
        ]
        assert statuses == [401] * PAIR + [429] * 3  # one address, whatever the header says
        # spraying many accounts from one address: stopped at ACCOUNTS distinct ones (the
        # target is one already)
        sprayed = [
            login(http, stack, f"nobody{i}", "guess", **{"X-Forwarded-For": forged()})
            for i in range(ACCOUNTS + 2)
        ]
        assert sprayed == [401] * (ACCOUNTS - 1) + [429] * 3


def test_the_forwarded_for_of_a_trusted_proxy_is_believed(behind_proxy: Stack) -> None:
    stack = behind_proxy
    target = register_and_login(stack).username
    with client_from() as http:
        # every attempt comes "from" another client address: no per-address limit trips
        statuses = [
            login(http, stack, target, f"guess {i}", **{"X-Forwarded-For": forged()})
            for i in range(PAIR + 2)
        ]
        assert statuses == [401] * (PAIR + 2)
        # and the scheme: a Secure cookie only when the trusted proxy says https
        r = http.post(
            stack.url("/api/auth/login"),
            json={"username": target, "password": PASSWORD},
            headers={"X-Chat-Session": "cookie", "X-Forwarded-Proto": "https"},
        )
        assert r.status_code == 200, r.text
        assert "; secure" in r.headers["set-cookie"].lower()


def test_https_from_an_untrusted_client_is_not_believed(default_server: Stack) -> None:
    stack = default_server
    user = register_and_login(stack)
    with client_from() as http:
        r = http.post(
            stack.url("/api/auth/login"),
            json={"username": user.username, "password": PASSWORD},
            headers={"X-Chat-Session": "cookie", "X-Forwarded-Proto": "https"},
        )
    assert r.status_code == 200, r.text
    cookie = r.headers["set-cookie"].lower()
    assert "httponly" in cookie and "; secure" not in cookie


def test_two_colleagues_behind_one_address(default_server: Stack) -> None:
    """One mistypes 25 times (which locks only their own account from there); the other logs
    in every time."""
    stack = default_server
    typist, colleague = register_and_login(stack), register_and_login(stack)
    with client_from() as office:
        typos = [login(office, stack, typist.username, f"typo {i}") for i in range(25)]
        assert typos == [401] * PAIR + [429] * (25 - PAIR)
        for _ in range(3):
            assert login(office, stack, colleague.username, PASSWORD) == 200
