"""POST /api/auth/login: tokens, same answer for unknown users, transparent rehash."""

from __future__ import annotations

from dataclasses import replace

import jwt
from flask import Flask
from sqlalchemy import select

from services.auth import create_app
from services.common.models import User
from services.common.settings import Settings
from tests.auth.conftest import (
    PASSWORD,
    Api,
    Database,
    FakeClock,
    Relay,
    auth_state,
    dispose,
    error_code,
)


def test_login_returns_a_token_pair(api: Api, settings: Settings) -> None:
    api.register("alice")
    r = api.login("ALICE")
    assert r.status_code == 200
    body = r.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == settings.access_ttl
    claims = jwt.decode(
        body["access_token"],
        settings.jwt_secret,
        algorithms=["HS256"],
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
    )
    assert claims["typ"] == "access"
    assert claims["name"] == "alice"
    assert {"iss", "aud", "exp", "iat", "nbf", "jti", "sid", "sub"} <= set(claims)
    assert claims["exp"] - claims["iat"] == settings.access_ttl
    assert jwt.get_unverified_header(body["access_token"])["alg"] == "HS256"


def test_unknown_user_and_wrong_password_get_the_same_answer(api: Api, app: Flask) -> None:
    api.register("alice")
    passwords = auth_state(app).passwords
    before = passwords.calls
    wrong = api.login("alice", "not the password")
    after_wrong = passwords.calls
    unknown = api.login("nobody", "not the password")
    after_unknown = passwords.calls
    invalid = api.login("not a valid name!", "not the password")
    assert wrong.status_code == unknown.status_code == invalid.status_code == 401
    assert wrong.get_json() == unknown.get_json() == invalid.get_json()
    assert error_code(wrong) == "invalid_credentials"
    assert wrong.headers.get("WWW-Authenticate") == unknown.headers.get("WWW-Authenticate")
    # The same hashing work both ways: one argon2 verification each.
    assert after_wrong - before == 1
    assert after_unknown - after_wrong == 1
    assert passwords.calls - after_unknown == 1


def test_login_with_non_string_fields_is_invalid_request(api: Api) -> None:
    for body in ({"username": "alice"}, {"username": 1, "password": "x" * 10}, {}):
        r = api.post("/api/auth/login", body)
        assert r.status_code == 422
        assert error_code(r) == "invalid_request"


def test_overlong_password_is_refused_like_a_wrong_one(api: Api) -> None:
    api.register("alice")
    r = api.login("alice", PASSWORD + "x" * 500)
    assert r.status_code == 401
    assert error_code(r) == "invalid_credentials"


def test_rehash_on_login_when_parameters_change(
    api: Api, settings: Settings, relay: Relay, clock: FakeClock, database: Database
) -> None:
    api.register("alice")
    with database.engine.connect() as conn:
        old = conn.execute(select(User.password_hash)).scalar_one()
    assert "t=1" in old
    stronger = replace(settings, argon2_time_cost=2, argon2_memory_kib=512)
    app2 = create_app(stronger, relay=relay.background.ensure_started(), clock=clock)
    try:
        api2 = Api(app2)
        assert api2.login("alice").status_code == 200
        with database.engine.connect() as conn:
            new = conn.execute(select(User.password_hash)).scalar_one()
        assert new != old and "m=512,t=2" in new
        assert api2.login("alice").status_code == 200  # the new hash verifies
        assert api2.login("alice", "wrong password!").status_code == 401
        # no rehash when nothing changed
        with database.engine.connect() as conn:
            assert conn.execute(select(User.password_hash)).scalar_one() == new
    finally:
        dispose(app2)
