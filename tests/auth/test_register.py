"""POST /api/auth/register: username and password rules, uniqueness, the common-password list."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select

from services.common.models import User
from tests.auth.conftest import PASSWORD, Api, Database, error_code


def test_register_returns_the_canonical_user(api: Api) -> None:
    r = api.register("Alice.Smith_1")
    assert r.status_code == 201
    body = r.get_json()
    assert body["username"] == "alice.smith_1"
    assert isinstance(body["id"], str) and body["id"]
    assert set(body) == {"id", "username"}


def test_usernames_are_case_insensitive(api: Api) -> None:
    assert api.register("alice").status_code == 201
    for name in ("ALICE", "Alice", "aLiCe"):
        r = api.register(name)
        assert r.status_code == 409
        assert error_code(r) == "username_taken"


@pytest.mark.parametrize(
    "username",
    [
        "ab",  # too short
        "a" * 33,  # too long
        "has space",
        "émile",  # not a-z
        "ünïcode",
        "a/b",
        "tab\tname",
        "new\nline",
        "",
        "\u212aelvin",  # KELVIN SIGN lower-cases to ASCII 'k': still refused
        "semi;colon",
        "at@sign",
        123,
        None,
        ["alice"],
        {"name": "alice"},
    ],
)
def test_invalid_usernames(api: Api, username: Any) -> None:
    r = api.post("/api/auth/register", {"username": username, "password": PASSWORD})
    assert r.status_code == 422
    assert error_code(r) == "invalid_username"


@pytest.mark.parametrize("username", ["abc", "a" * 32, "a.b", "a-b", "a_b", "0123", "..."])
def test_valid_usernames(api: Api, username: str) -> None:
    assert api.register(username).status_code == 201


@pytest.mark.parametrize(
    "password",
    [
        "short",  # < 8
        "1234567",
        "x" * 129,  # > 128
        "password",  # common
        "Password123",  # common, any case
        "qwertyuiop",
        "iloveyou",
        "sunshine2024",
        "P@ssw0rd",
        "dragon123",
        "newuser1",  # the username, nearly
        12345678,
        None,
        ["correct horse battery"],
    ],
)
def test_invalid_passwords(api: Api, password: Any) -> None:
    r = api.post("/api/auth/register", {"username": "newuser", "password": password})
    assert r.status_code == 422
    assert error_code(r) == "invalid_password"


@pytest.mark.parametrize(
    "password",
    ["x" * 8 + "9!", "ü" * 8, "🔒🔑🗝️🔐🔒🔑🗝️🔐", "a" * 100 + "Z" * 28, "correct horse battery"],
)
def test_valid_passwords_any_unicode(api: Api, password: str) -> None:
    assert api.register("unicode_user", password).status_code == 201
    assert api.login("unicode_user", password).status_code == 200


def test_password_is_stored_as_argon2id(api: Api, database: Database) -> None:
    api.register("alice")
    with database.engine.connect() as conn:
        stored = conn.execute(select(User.password_hash)).scalar_one()
    assert stored.startswith("$argon2id$")
    assert PASSWORD not in stored


def test_missing_fields(api: Api) -> None:
    assert error_code(api.post("/api/auth/register", {"password": PASSWORD})) == (
        "invalid_username"
    )
    assert error_code(api.post("/api/auth/register", {"username": "alice"})) == ("invalid_password")


def test_one_user_row_per_name(api: Api, database: Database) -> None:
    api.register("alice")
    api.register("ALICE")
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(User)).scalar_one() == 1
