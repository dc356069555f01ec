"""Access tokens (RFC 8725) under attack, refresh rotation and reuse detection, logout."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from sqlalchemy import select

from services.common.models import Outbox, RefreshToken, Session
from services.common.settings import Settings
from tests.auth.conftest import Api, Database, Relay, error_code, wait_for

PROTECTED = [("GET", "/api/auth/me"), ("GET", "/api/rooms"), ("GET", "/api/users/alice")]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


def _sign(payload: dict[str, Any], key: str, alg: str = "HS256", **headers: Any) -> str:
    return jwt.encode(payload, key, algorithm=alg, headers=headers or None)


def _call(api: Api, token: str) -> list[int]:
    out = []
    for method, path in PROTECTED:
        r = api.get(path, token) if method == "GET" else api.post(path, token=token)
        out.append(r.status_code)
        if r.status_code == 401:
            assert error_code(r) in ("invalid_token", "unauthorized")
            assert r.headers["WWW-Authenticate"].startswith("Bearer")
    return out


def _forged(settings: Settings, good: str) -> dict[str, Callable[[], str]]:
    base = _claims(good)
    now = int(time.time())
    s = settings.jwt_secret

    def alg_none() -> str:
        header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
        return f"{header}.{_b64(json.dumps(base).encode())}."

    def tampered() -> str:
        head, _, sig = good.split(".")
        evil = dict(base, sub="01" + "z" * 24, name="admin")
        return f"{head}.{_b64(json.dumps(evil).encode())}.{sig}"

    def stripped_signature() -> str:
        head, body, _ = good.split(".")
        return f"{head}.{body}."

    return {
        "alg_none": alg_none,
        "alg_none_lib": lambda: jwt.encode(base, None, algorithm="none"),
        "other_key": lambda: _sign(base, "another-secret-" + "y" * 40),
        "hs512_same_key": lambda: _sign(base, s, "HS512"),
        "tampered_payload": tampered,
        "stripped_signature": stripped_signature,
        "expired": lambda: _sign(dict(base, iat=now - 4000, nbf=now - 4000, exp=now - 60), s),
        "wrong_aud": lambda: _sign(dict(base, aud="someone-else"), s),
        "wrong_iss": lambda: _sign(dict(base, iss="evil"), s),
        "future_nbf": lambda: _sign(dict(base, nbf=now + 600), s),
        "no_exp": lambda: _sign({k: v for k, v in base.items() if k != "exp"}, s),
        "no_sid": lambda: _sign({k: v for k, v in base.items() if k != "sid"}, s),
        "refresh_type": lambda: _sign(dict(base, typ="refresh"), s),
        "unknown_session": lambda: _sign(dict(base, sid="0" * 26), s),
        "garbage": lambda: "not.a.token",
        "empty_bearer": lambda: " ",
        "huge": lambda: "a" * 10_000,
    }


ATTACKS = [
    "alg_none",
    "alg_none_lib",
    "other_key",
    "hs512_same_key",
    "tampered_payload",
    "stripped_signature",
    "expired",
    "wrong_aud",
    "wrong_iss",
    "future_nbf",
    "no_exp",
    "no_sid",
    "refresh_type",
    "unknown_session",
    "garbage",
    "empty_bearer",
    "huge",
]


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
@pytest.mark.parametrize("attack", ATTACKS)
def test_token_attacks_get_401(api: Api, settings: Settings, attack: str) -> None:
    alice = api.user("alice")
    assert _call(api, alice["access_token"]) == [200, 200, 200]  # the genuine token works
    forged = _forged(settings, alice["access_token"])[attack]()
    assert _call(api, forged) == [401, 401, 401]


def test_no_token_and_other_schemes(api: Api) -> None:
    alice = api.user("alice")
    assert _call(api, "") == [401, 401, 401]
    for header in (f"Basic {alice['access_token']}", alice["access_token"], "Bearer"):
        r = api.get("/api/auth/me", headers={"Authorization": header})
        assert r.status_code == 401


def test_refresh_token_is_not_an_access_token(api: Api) -> None:
    alice = api.user("alice")
    assert _call(api, alice["refresh_token"]) == [401, 401, 401]


def test_access_token_is_not_a_refresh_token(api: Api) -> None:
    alice = api.user("alice")
    r = api.post("/api/auth/refresh", {"refresh_token": alice["access_token"]})
    assert r.status_code == 401
    assert error_code(r) == "invalid_token"


def test_refresh_rotates(api: Api, database: Database) -> None:
    alice = api.user("alice")
    r = api.post("/api/auth/refresh", {"refresh_token": alice["refresh_token"]})
    assert r.status_code == 200
    pair = r.get_json()
    assert set(pair) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert pair["refresh_token"] != alice["refresh_token"]
    assert _claims(pair["access_token"])["sid"] == _claims(alice["access_token"])["sid"]
    assert api.get("/api/auth/me", pair["access_token"]).status_code == 200
    # chains: the new one works once too
    r2 = api.post("/api/auth/refresh", {"refresh_token": pair["refresh_token"]})
    assert r2.status_code == 200
    # stored hashed, never in clear
    with database.engine.connect() as conn:
        stored = set(conn.execute(select(RefreshToken.token_hash)).scalars())
    assert pair["refresh_token"] not in stored and alice["refresh_token"] not in stored
    assert all(len(h) == 64 for h in stored)


def test_reused_refresh_token_revokes_the_session(api: Api, relay: Relay) -> None:
    alice = api.user("alice")
    other = api.login("alice").get_json()  # a second, unrelated session
    stolen = alice["refresh_token"]
    legit = api.post("/api/auth/refresh", {"refresh_token": stolen}).get_json()
    replay = api.post("/api/auth/refresh", {"refresh_token": stolen})
    assert replay.status_code == 401
    assert error_code(replay) == "invalid_token"
    # the whole session is dead: every access token and the newest refresh token
    assert api.get("/api/auth/me", legit["access_token"]).status_code == 401
    assert api.get("/api/auth/me", alice["access_token"]).status_code == 401
    again = api.post("/api/auth/refresh", {"refresh_token": legit["refresh_token"]})
    assert again.status_code == 401
    # announced on the broker; the other session lives on
    sid = _claims(alice["access_token"])["sid"]
    assert any(e["sid"] == sid for e in relay.bus.events("session_revoked"))
    assert api.get("/api/auth/me", other["access_token"]).status_code == 200


@pytest.mark.parametrize(
    "body", [{"refresh_token": "rt_unknown"}, {"refresh_token": ""}, {"refresh_token": 5}, {}]
)
def test_invalid_refresh_tokens(api: Api, body: dict[str, Any]) -> None:
    r = api.post("/api/auth/refresh", body)
    assert r.status_code == 401
    assert error_code(r) == "invalid_token"


def test_logout_kills_the_session_at_once(api: Api, relay: Relay, database: Database) -> None:
    alice = api.user("alice")
    other = api.login("alice").get_json()
    sid = _claims(alice["access_token"])["sid"]
    relay.bus.delay = 0.3  # a slow broker: only a logout that waits for the confirm sees it
    r = api.post("/api/auth/logout", token=alice["access_token"])
    assert r.status_code == 204
    assert r.data == b""
    # Published to the broker before the 204 came back (no waiting here).
    revoked = [e for e in relay.bus.events("session_revoked") if e["sid"] == sid]
    assert len(revoked) == 1
    assert revoked[0]["until"] >= _claims(alice["access_token"])["exp"]
    assert _call(api, alice["access_token"]) == [401, 401, 401]
    r = api.post("/api/auth/refresh", {"refresh_token": alice["refresh_token"]})
    assert r.status_code == 401
    assert api.post("/api/auth/logout", token=alice["access_token"]).status_code == 401
    assert api.get("/api/auth/me", other["access_token"]).status_code == 200
    with database.engine.connect() as conn:
        assert conn.execute(select(Session.revoked_ms).where(Session.id == sid)).scalar_one()


def test_logout_event_survives_a_broker_outage(api: Api, relay: Relay, database: Database) -> None:
    """The revocation is committed with the outbox row; the relay delivers it later."""
    alice = api.user("alice")
    sid = _claims(alice["access_token"])["sid"]
    relay.bus.fail = True
    started = time.monotonic()
    assert api.post("/api/auth/logout", token=alice["access_token"]).status_code == 204
    assert time.monotonic() - started < 5  # waits at most ~2 s for the relay, then answers
    assert api.get("/api/auth/me", alice["access_token"]).status_code == 401
    with database.engine.connect() as conn:
        assert conn.execute(select(Outbox.routing_key)).scalars().all() == ["session.revoked"]
    relay.bus.fail = False
    wait_for(lambda: any(e["sid"] == sid for e in relay.bus.events("session_revoked")))
    wait_for(lambda: _outbox_empty(database))


def _outbox_empty(database: Database) -> bool:
    with database.engine.connect() as conn:
        return not conn.execute(select(Outbox.id)).first()


def test_me(api: Api) -> None:
    alice = api.user("Alice")
    r = api.get("/api/auth/me", alice["access_token"])
    assert r.status_code == 200
    assert r.get_json() == {"id": alice["id"], "username": "alice"}
