"""GET /api/users/{username}."""

from __future__ import annotations

import pytest

from tests.auth.conftest import Api, error_code


def test_lookup_is_case_insensitive(api: Api) -> None:
    alice = api.user("alice")
    bob = api.register("bob").get_json()
    for name in ("bob", "BOB", "Bob"):
        r = api.get(f"/api/users/{name}", alice["access_token"])
        assert r.status_code == 200
        assert r.get_json() == {"id": bob["id"], "username": "bob"}


@pytest.mark.parametrize("name", ["nobody", "no", "x" * 40, "émile", "a%20b", "a.b.c"])
def test_unknown_users_are_404(api: Api, name: str) -> None:
    alice = api.user("alice")
    r = api.get(f"/api/users/{name}", alice["access_token"])
    assert r.status_code == 404
    assert error_code(r) == "user_not_found"


def test_lookup_needs_a_token(api: Api) -> None:
    api.register("bob")
    r = api.get("/api/users/bob")
    assert r.status_code == 401
    assert error_code(r) == "unauthorized"
