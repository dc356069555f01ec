"""``/api/auth``: register, login, refresh, logout, me (API.md "Auth and users"), and the
browser's cookie session: login with ``X-Chat-Session: cookie``, ``/session/refresh``,
``/session/logout`` (services/auth/browser.py)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, current_app, jsonify, request
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from services.auth import browser, metrics
from services.auth.bearer import authenticate
from services.auth.errors import APIError, unauthorized
from services.auth.extensions import db
from services.auth.passwords import password_problem
from services.auth.sessions import (
    InvalidRefresh,
    live_session,
    revoke,
    rotate,
    session_of_refresh,
    start_session,
)
from services.auth.state import commit_and_publish, state
from services.auth.throttle import Reservation, address_key, reserve
from services.auth.validation import (
    PASSWORD_MAX,
    canonical_username,
    json_object,
    normalize_password,
)
from services.common.ids import new_id
from services.common.models import User

bp = Blueprint("auth", __name__, url_prefix="/api/auth")
log = logging.getLogger("chat.auth")


def user_json(user: User) -> dict[str, str]:
    return {"id": user.id, "username": user.username}


def _find_user(username: str) -> User | None:
    return db.session.execute(select(User).where(User.username == username)).scalar_one_or_none()


@bp.post("/register")
def register() -> tuple[Response, int]:
    data = json_object()
    username = canonical_username(data.get("username"))
    if username is None:
        raise APIError(
            422, "invalid_username", "usernames are 3-32 characters of a-z, 0-9, '_', '.', '-'"
        )
    password = normalize_password(data.get("password"))
    if password is None:
        raise APIError(422, "invalid_password", "passwords are 8-128 characters")
    problem = password_problem(username, password)
    if problem is not None:
        raise APIError(422, "invalid_password", problem)
    st = state()
    if _find_user(username) is not None:  # spare the hashing work for the obvious case
        raise APIError(409, "username_taken", "this username is taken")
    # Only now any hashing, and only within the address's registration limit.
    limit = st.register_limit
    held = reserve(db.session(), [(limit, address_key(_client_address()))], st.clock())
    if not isinstance(held, Reservation):
        metrics.REGISTRATIONS_THROTTLED.inc()
        raise APIError(
            429,
            "rate_limited",
            "too many registrations from this address; try again later",
            headers={"Retry-After": str(int(held))},
        )
    user = User(
        id=new_id(),
        username=username,
        password_hash=st.passwords.hash(password),
        created_ms=st.clock(),
    )
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError:  # registered concurrently: the unique index decides
        db.session.rollback()
        raise APIError(409, "username_taken", "this username is taken") from None
    metrics.REGISTRATIONS.inc()
    return jsonify(user_json(user)), 201


def _client_address() -> str | None:
    return request.remote_addr


@bp.post("/login")
def login() -> Response:
    cookie = browser.wanted()
    if cookie:
        browser.check_origin()
    data = json_object()
    raw_username, raw_password = data.get("username"), data.get("password")
    if not isinstance(raw_username, str) or not isinstance(raw_password, str):
        raise APIError(422, "invalid_request", "username and password must be strings")
    st = state()
    now = st.clock()
    held = st.throttle.reserve(db.session(), raw_username, _client_address(), now)
    if not isinstance(held, Reservation):
        metrics.LOGINS.labels("throttled").inc()
        raise APIError(
            429,
            "rate_limited",
            "too many failed logins; try again later",
            headers={"Retry-After": str(int(held))},
        )
    # Only now any hashing. An unknown user costs the same work as a wrong password.
    username = canonical_username(raw_username)
    password = normalize_password(raw_password)
    candidate = password if password is not None else raw_password[:PASSWORD_MAX]
    user = _find_user(username) if username is not None else None
    if user is None:
        st.passwords.verify_dummy(candidate)
        ok = False
    else:
        ok = st.passwords.verify(user.password_hash, candidate) and password is not None
    if user is None or not ok:
        metrics.LOGINS.labels("failed").inc()
        raise APIError(401, "invalid_credentials", "wrong username or password")
    st.throttle.release(db.session(), held)
    if st.passwords.needs_rehash(user.password_hash):
        user.password_hash = st.passwords.hash(candidate)
    pair = start_session(db.session(), st.settings, user, now)
    db.session.commit()
    metrics.LOGINS.labels("ok").inc()
    if not cookie:
        return jsonify(pair.as_json())
    assert pair.refresh_token is not None
    return browser.set_cookie(
        jsonify(pair.as_cookie_json()), pair.refresh_token, st.settings.refresh_ttl
    )


def _invalid_refresh(exc: InvalidRefresh) -> None:
    """Undo or commit what a failed exchange staged (a reused token revokes its session)."""
    if exc.reused:
        log.warning("refresh token reused: session revoked")
        metrics.REFRESH_REUSE.inc()
        commit_and_publish(wait=True)
    else:
        db.session.rollback()


@bp.post("/refresh")
def refresh() -> Response:
    data = json_object()
    st = state()
    try:
        pair = rotate(db.session(), st.settings, data.get("refresh_token"), st.clock())
    except InvalidRefresh as exc:
        _invalid_refresh(exc)
        raise unauthorized("invalid_token", "the refresh token is invalid or expired") from None
    db.session.commit()
    return jsonify(pair.as_json())


@bp.post("/session/refresh")
def session_refresh() -> Response:
    """The browser's refresh: the token comes in the cookie, a new one goes back in it; tabs
    refreshing at once within the grace all get an access token of the one session."""
    browser.guard()
    st = state()
    now = st.clock()
    grace_ms = int(st.settings.refresh_reuse_grace * 1000)
    try:
        pair = rotate(db.session(), st.settings, browser.token(), now, grace_ms=grace_ms)
    except InvalidRefresh as exc:
        _invalid_refresh(exc)
        error = unauthorized("invalid_token", "the session has ended; log in again")
        error.headers.update(browser.clearing_header())
        raise error from None
    db.session.commit()
    response = jsonify(pair.as_cookie_json())
    if pair.refresh_token is not None:  # within the grace: the cookie jar keeps the new one
        max_age = (pair.expires_ms - now) // 1000
        browser.set_cookie(response, pair.refresh_token, int(max_age))
    return response


@bp.post("/session/logout")
def session_logout() -> Response:
    """The browser's logout: ends the cookie's session like ``/logout`` (tokens revoked,
    WebSockets closed with 4001), even once its access token has expired; clears the cookie."""
    browser.guard()
    st = state()
    session = session_of_refresh(db.session(), browser.token())
    if session is not None and revoke(db.session(), st.settings, session, st.clock()):
        commit_and_publish(wait=True)
    else:
        db.session.rollback()
    return browser.clear_cookie(Response(status=204))


@bp.post("/logout")
def logout() -> tuple[str, int]:
    claims = authenticate()
    st = state()
    session = live_session(db.session(), claims.sid, claims.user_id, st.clock())
    if session is not None and revoke(db.session(), st.settings, session, st.clock()):
        # The revocation is on the broker before the 204: every gateway closes the session's
        # sockets and refuses its token from now on.
        commit_and_publish(wait=True)
    return "", 204


@bp.get("/me")
def me() -> Response:
    claims = authenticate()
    user = db.session.get(User, claims.user_id)
    if user is None:
        raise unauthorized("invalid_token", "this account no longer exists")
    return jsonify(user_json(user))


@bp.get("/openapi.yaml")
def openapi() -> Response:
    """The OpenAPI 3.1 document of the REST API (services/auth/openapi.yaml, its one copy)."""
    text = current_app.extensions["chat_openapi"]
    return Response(text, mimetype="application/yaml")
