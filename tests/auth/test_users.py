"""GET /api/users/{username}, and GET /api/users?prefix= (finding people)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from services.auth import create_app
from services.common.settings import Settings
from tests.auth.conftest import Api, FakeClock, Relay, dispose, error_code


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


# GET /api/users?prefix= (issue 16) -----------------------------------------------------------


@pytest.fixture
def searcher(api: Api) -> dict[str, object]:
    for name in ("ann", "anna", "anna_b", "annaxb", "anna.c", "anne", "annz", "bob", "an_na"):
        assert api.register(name).status_code == 201
    return dict(api.user("zed"))


def search(api: Api, token: object, **params: object) -> object:
    return api.get("/api/users", str(token), query_string=params)


def test_prefix_search_in_order(api: Api, searcher: dict[str, object]) -> None:
    r = search(api, searcher["access_token"], prefix="ANN")
    assert r.status_code == 200
    users = r.get_json()["users"]
    assert [u["username"] for u in users] == [
        "ann",
        "anna",
        "anna.c",
        "anna_b",
        "annaxb",
        "anne",
        "annz",
    ]
    assert all(set(u) == {"id", "username"} for u in users)
    assert [
        u["username"]
        for u in search(api, searcher["access_token"], prefix="anna").get_json()["users"]
    ] == ["anna", "anna.c", "anna_b", "annaxb"]
    none = search(api, searcher["access_token"], prefix="qqq")
    assert none.status_code == 200 and none.get_json() == {"users": []}


def test_prefix_wildcards_are_literal(api: Api, searcher: dict[str, object]) -> None:
    """``_`` is a username character and a LIKE wildcard: it matches only itself."""
    names = lambda p: [  # noqa: E731
        u["username"] for u in search(api, searcher["access_token"], prefix=p).get_json()["users"]
    ]
    assert names("anna_") == ["anna_b"]  # not annaxb
    assert names("an_") == ["an_na"]
    assert names("anna.") == ["anna.c"]
    for bad in ("an%", "a%%", "ann*", "an\\n"):
        r = search(api, searcher["access_token"], prefix=bad)
        assert r.status_code == 422 and error_code(r) == "invalid_request", bad


def test_prefix_search_limits(api: Api, searcher: dict[str, object]) -> None:
    token = searcher["access_token"]
    default = search(api, token, prefix="ann").get_json()["users"]
    assert len(default) == 7  # all of them: under the default 10
    two = search(api, token, prefix="ann", limit=2).get_json()["users"]
    assert [u["username"] for u in two] == ["ann", "anna"]
    assert len(search(api, token, prefix="ann", limit=20).get_json()["users"]) == 7
    for params in (
        {"prefix": "an"},
        {"prefix": ""},
        {},
        {"prefix": "x" * 33},
        {"prefix": "émi"},
        {"prefix": "ann", "limit": 0},
        {"prefix": "ann", "limit": 21},
        {"prefix": "ann", "limit": "ten"},
        {"prefix": "ann", "limit": -1},
    ):
        r = search(api, token, **params)
        assert r.status_code == 422 and error_code(r) == "invalid_request", params
    assert api.get("/api/users", query_string={"prefix": "ann"}).status_code == 401


def test_prefix_search_is_rate_limited_per_user(
    settings: Settings, relay: Relay, clock: FakeClock
) -> None:
    app = create_app(
        replace(settings, user_search_per_minute=3),
        relay=relay.background.ensure_started(),
        clock=clock,
    )
    try:
        api = Api(app)
        alice, bob = api.user("alice"), api.user("bob")
        for _ in range(3):
            assert search(api, alice["access_token"], prefix="bob").status_code == 200
        r = search(api, alice["access_token"], prefix="bob")
        assert r.status_code == 429 and error_code(r) == "rate_limited"
        assert 1 <= int(r.headers["Retry-After"]) <= 66
        # bad requests do not use it up, and other users have their own
        assert search(api, alice["access_token"], prefix="b").status_code == 422
        assert search(api, bob["access_token"], prefix="ali").status_code == 200
        clock.advance(int(r.headers["Retry-After"]))
        assert search(api, alice["access_token"], prefix="bob").status_code == 200
    finally:
        dispose(app)
