"""The browser's session by cookie (issue 16): login with ``X-Chat-Session: cookie`` puts the
refresh token in an HttpOnly, SameSite=Strict cookie on /api/auth/session; refresh rotates it
(tabs refreshing at once within the grace all get an access token of the one session); logout
ends the session everywhere; the CSRF guard (header, Origin) refuses what a browser on another
site could send. Both databases (SQLite and MariaDB); the concurrent refresh also through
gunicorn on MariaDB."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from http.cookies import SimpleCookie
from typing import Any

import httpx
import pytest
from flask import Flask

from services.auth import create_app
from services.common.settings import Settings
from services.common.tokens import decode_access
from tests.auth.conftest import PASSWORD, Api, FakeClock, Relay, dispose, error_code
from tests.auth.test_concurrency import auth_vhost, gunicorn_url, live, race  # noqa: F401

COOKIE_MODE = {"X-Chat-Session": "cookie"}
SESSION = "/api/auth/session"


def cookie_of(response: Any) -> SimpleCookie:
    """The ``chat_session`` Set-Cookie of an answer (exactly one)."""
    headers = [v for k, v in response.headers.items() if k.lower() == "set-cookie"]
    assert len(headers) == 1, headers
    jar: SimpleCookie = SimpleCookie()
    jar.load(headers[0])
    assert "chat_session" in jar, headers
    return jar


def attrs(response: Any) -> str:
    return next(v for k, v in response.headers.items() if k.lower() == "set-cookie").lower()


def cookie_login(api: Api, name: str, **kw: Any) -> Any:
    headers = {**COOKIE_MODE, **kw.pop("headers", {})}
    r = api.login(name, headers=headers, **kw)
    assert r.status_code == 200, r.get_json()
    return r


def refresh(api: Api, token: str | None = None, **headers: str) -> Any:
    if token is not None:
        api.client.set_cookie("chat_session", token, path=SESSION)
    return api.client.post(f"{SESSION}/refresh", headers={**COOKIE_MODE, **headers})


def sid(settings: Settings, access_token: str) -> str:
    return decode_access(settings, access_token).sid


def test_cookie_login(api: Api, settings: Settings) -> None:
    api.register("alice")
    r = cookie_login(api, "alice")
    body = r.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "username"}
    assert body["username"] == "alice" and body["token_type"] == "bearer"
    jar = cookie_of(r)
    assert jar["chat_session"].value.startswith("rt_")
    text = attrs(r)
    for part in ("httponly", "samesite=strict", "path=/api/auth/session"):
        assert part in text, text
    assert f"max-age={settings.refresh_ttl}" in text
    assert "secure" not in text.replace("samesite", "")  # plain http: no Secure
    assert api.get("/api/auth/me", body["access_token"]).status_code == 200
    # without the header: exactly as before (the refresh token in the body, no cookie)
    plain = api.login("alice")
    assert "refresh_token" in plain.get_json() and "set-cookie" not in {
        k.lower() for k in plain.headers.keys()
    }


@pytest.fixture
def proxied_app(settings: Settings, relay: Relay, clock: FakeClock) -> Iterator[Flask]:
    """Behind one trusted proxy (the scaled mode's nginx): scheme from X-Forwarded-Proto."""
    app = create_app(
        replace(settings, trusted_proxy_hops=1),
        relay=relay.background.ensure_started(),
        clock=clock,
    )
    yield app
    dispose(app)


def test_secure_cookie_over_https_from_a_trusted_proxy(api: Api, proxied_app: Flask) -> None:
    behind = Api(proxied_app)
    behind.register("alice")
    over_tls = cookie_login(behind, "alice", headers={"X-Forwarded-Proto": "https"})
    assert "; secure" in attrs(over_tls)
    plain = cookie_login(behind, "alice", headers={"X-Forwarded-Proto": "http"})
    assert "; secure" not in attrs(plain)
    # no proxy trusted (all-in-one): a client's X-Forwarded-Proto means nothing
    forged = cookie_login(api, "alice", headers={"X-Forwarded-Proto": "https"})
    assert "; secure" not in attrs(forged)


def test_refresh_rotates_the_cookie(api: Api, settings: Settings) -> None:
    api.register("alice")
    login = cookie_login(api, "alice")
    first = cookie_of(login)["chat_session"].value
    r = refresh(api)
    assert r.status_code == 200, r.get_json()
    body = r.get_json()
    assert set(body) == {"access_token", "token_type", "expires_in", "username"}
    assert body["username"] == "alice"
    second = cookie_of(r)["chat_session"].value
    assert second != first
    assert sid(settings, body["access_token"]) == sid(settings, login.get_json()["access_token"])
    assert api.get("/api/auth/me", body["access_token"]).status_code == 200
    again = refresh(api)  # the jar holds the new token: it works
    assert again.status_code == 200


def test_refresh_again_within_the_grace_keeps_one_session(
    api: Api, settings: Settings, clock: FakeClock
) -> None:
    """Two tabs refresh with the same cookie: the second gets an access token of the same
    session and no cookie (the jar keeps the first's), and the session does not fork."""
    api.register("alice")
    first = cookie_of(cookie_login(api, "alice"))["chat_session"].value
    tab1 = refresh(api, first)
    newest = cookie_of(tab1)["chat_session"].value
    clock.advance(settings.refresh_reuse_grace - 1)
    tab2 = refresh(api, first)
    assert tab2.status_code == 200, tab2.get_json()
    assert "set-cookie" not in {k.lower() for k in tab2.headers.keys()}
    s1, s2 = (sid(settings, t.get_json()["access_token"]) for t in (tab1, tab2))
    assert s1 == s2
    assert api.get("/api/auth/me", tab2.get_json()["access_token"]).status_code == 200
    # one live refresh token: the winner's; it still works
    later = refresh(api, newest)
    assert later.status_code == 200
    assert sid(settings, later.get_json()["access_token"]) == s1


def test_reuse_after_the_grace_ends_the_session(
    api: Api, settings: Settings, clock: FakeClock, relay: Relay
) -> None:
    api.register("alice")
    login = cookie_login(api, "alice")
    first = cookie_of(login)["chat_session"].value
    newest = cookie_of(refresh(api, first))["chat_session"].value
    clock.advance(settings.refresh_reuse_grace + 1)
    stolen = refresh(api, first)
    assert stolen.status_code == 401
    assert error_code(stolen) == "invalid_token"
    assert "max-age=0" in attrs(stolen)  # and the cookie is cleared
    assert refresh(api, newest).status_code == 401  # the whole session is dead
    assert api.get("/api/auth/me", login.get_json()["access_token"]).status_code == 401


def test_bearer_refresh_has_no_grace(api: Api) -> None:
    """The bearer API's reuse rule is unchanged: a used token back at once kills the session."""
    alice = api.user("alice")
    legit = api.post("/api/auth/refresh", {"refresh_token": alice["refresh_token"]})
    assert legit.status_code == 200
    replay = api.post("/api/auth/refresh", {"refresh_token": alice["refresh_token"]})
    assert replay.status_code == 401
    newest = legit.get_json()["refresh_token"]
    assert api.post("/api/auth/refresh", {"refresh_token": newest}).status_code == 401


def test_the_csrf_guard(api: Api, settings: Settings) -> None:
    api.register("alice")
    cookie_login(api, "alice")
    # no header (what a cross-site form or a simple request sends): refused, nothing changes
    bare = api.client.post(f"{SESSION}/refresh")
    assert bare.status_code == 403 and error_code(bare) == "forbidden"
    wrong = api.client.post(f"{SESSION}/refresh", headers={"X-Chat-Session": "bearer"})
    assert wrong.status_code == 403
    assert api.client.post(f"{SESSION}/logout").status_code == 403
    # another site's page (with the header it could not send without a preflight anyway)
    evil = refresh(api, None, Origin="https://evil.example")
    assert evil.status_code == 403
    assert (
        api.login("alice", headers={**COOKIE_MODE, "Origin": "https://evil.example"}).status_code
        == 403
    )
    # the page's own origin passes (no allow-list configured: the Host's origin)
    same = refresh(api, None, Origin="http://localhost")
    assert same.status_code == 200, same.get_json()


def test_allow_list_is_the_whole_truth(settings: Settings, relay: Relay, clock: FakeClock) -> None:
    app = create_app(
        replace(settings, allowed_origins=("https://chat.example.com",)),
        relay=relay.background.ensure_started(),
        clock=clock,
    )
    try:
        api = Api(app)
        api.register("alice")
        cookie_login(api, "alice", headers={"Origin": "https://chat.example.com"})
        assert refresh(api, None, Origin="http://localhost").status_code == 403
        assert refresh(api, None, Origin="https://chat.example.com").status_code == 200
    finally:
        dispose(app)


def test_refresh_without_a_cookie(api: Api) -> None:
    r = api.client.post(f"{SESSION}/refresh", headers=COOKIE_MODE)
    assert r.status_code == 401 and error_code(r) == "invalid_token"
    assert "max-age=0" in attrs(r)
    bogus = refresh(api, "rt_not-a-token")
    assert bogus.status_code == 401


def test_session_logout(api: Api, relay: Relay) -> None:
    api.register("alice")
    login = cookie_login(api, "alice")
    token = login.get_json()["access_token"]
    # no access token needed (it may have expired): the cookie names the session
    out = api.client.post(f"{SESSION}/logout", headers=COOKIE_MODE)
    assert out.status_code == 204
    assert "max-age=0" in attrs(out)
    assert api.get("/api/auth/me", token).status_code == 401
    revoked = [e for e in relay.bus.events("session_revoked")]
    assert (
        len(revoked) == 1
        and revoked[0]["sid"] == decode_access(api.app.extensions["chat_auth"].settings, token).sid
    )
    # the old cookie is dead; logging out again is harmless
    assert refresh(api, cookie_of(login)["chat_session"].value).status_code == 401
    assert api.client.post(f"{SESSION}/logout", headers=COOKIE_MODE).status_code == 204


def test_bearer_logout_ends_the_cookie_session(api: Api) -> None:
    api.register("alice")
    login = cookie_login(api, "alice")
    r = api.post("/api/auth/logout", token=login.get_json()["access_token"])
    assert r.status_code == 204
    after = refresh(api)
    assert after.status_code == 401
    assert error_code(after) == "invalid_token"


def test_tabs_refreshing_at_once(live: str, settings: Settings) -> None:  # noqa: F811
    """Eight tabs refresh with one cookie at the same instant (threads, a real server: werkzeug
    on SQLite, gunicorn on MariaDB): every one gets an access token of the one session, one
    new cookie is set, and it keeps working."""
    httpx.post(f"{live}/api/auth/register", json={"username": "tabs", "password": PASSWORD})
    login = httpx.post(
        f"{live}/api/auth/login",
        json={"username": "tabs", "password": PASSWORD},
        headers=COOKIE_MODE,
    )
    assert login.status_code == 200, login.text
    token = login.cookies["chat_session"]
    results = race(
        8,
        lambda c, i: c.post(
            f"{live}{SESSION}/refresh", headers={**COOKIE_MODE, "Cookie": f"chat_session={token}"}
        ),
    )
    assert [r.status_code for r in results] == [200] * 8, [r.text for r in results]
    sids = {sid(settings, r.json()["access_token"]) for r in results}
    assert sids == {sid(settings, login.json()["access_token"])}
    rotated = [r.cookies["chat_session"] for r in results if "chat_session" in r.cookies]
    assert len(rotated) == 1 and rotated[0] != token
    nxt = httpx.post(
        f"{live}{SESSION}/refresh",
        headers={**COOKIE_MODE, "Cookie": f"chat_session={rotated[0]}"},
    )
    assert nxt.status_code == 200, nxt.text
