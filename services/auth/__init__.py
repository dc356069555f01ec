"""The auth service: accounts, sessions, tokens and rooms (Flask, pallets-tutorial style).

Run it scaled as ``gunicorn -c python:services.auth.gunicorn_conf 'services.auth:create_app()'``;
the all-in-one server mounts ``create_app(settings, relay=...)`` in its ASGI app.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from flask import Flask
from sqlalchemy.engine import Engine
from werkzeug.middleware.proxy_fix import ProxyFix

from services.auth import auth, health, requestlog, rooms, users
from services.auth.errors import register_error_handlers
from services.auth.extensions import db
from services.auth.passwords import Passwords
from services.auth.presence import PresenceLookup, nobody, over_http
from services.auth.relay_thread import BackgroundRelay
from services.auth.state import EXTENSION, AuthState
from services.auth.throttle import DistinctLimit, Limit, LoginThrottle
from services.common.bus import create_bus
from services.common.db import engine_options, normalize_url
from services.common.ids import now_ms
from services.common.outbox import OutboxRelay
from services.common.settings import Settings, get_settings

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
MAX_BODY_BYTES = 64 * 1024


def create_app(
    settings: Settings | None = None,
    *,
    relay: OutboxRelay | None = None,
    clock: Callable[[], int] | None = None,
    presence: PresenceLookup | None = None,
) -> Flask:
    """Build the auth app.

    ``relay``: the outbox relay to wake after a commit (the all-in-one server runs one). With
    none and an ``amqp://`` broker, each process starts its own relay thread on first use.
    ``clock``: epoch milliseconds (tests move time to check lockout expiry).
    ``presence``: who is online (the all-in-one server passes its gateway's); by default a
    gateway at ``CHAT_PRESENCE_URL`` is asked.
    """
    settings = settings or get_settings()
    app = Flask(__name__)
    url = normalize_url(settings.database_url)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=url,
        SQLALCHEMY_ENGINE_OPTIONS=engine_options(url),
        MAX_CONTENT_LENGTH=MAX_BODY_BYTES,  # POST /api/rooms allows more (rooms.py)
    )
    db.init_app(app)

    background = None
    if relay is None and settings.broker_url.startswith(("amqp:", "amqps:")):
        background = BackgroundRelay(
            engine=functools.partial(_engine_of, app),
            bus_factory=lambda: create_bus(settings.broker_url, settings.history_delivery_limit),
            default_shards=settings.history_shards,
        )
    app.extensions[EXTENSION] = AuthState(
        settings=settings,
        passwords=Passwords(settings),
        throttle=LoginThrottle(
            per_account=Limit("user", settings.login_fail_per_account_hour, 3600_000),
            per_account_address=Limit("pair", settings.login_fail_per_account_ip_minute, 60_000),
            accounts_per_address=DistinctLimit(
                "accts", settings.login_fail_accounts_per_ip_hour, 3600_000
            ),
        ),
        register_limit=Limit("reg", settings.register_per_ip_hour, 3600_000),
        search_limit=Limit("search", settings.user_search_per_minute, 60_000),
        clock=clock or now_ms,
        relay=relay,
        background=background,
        presence=presence
        or (over_http(settings.presence_url) if settings.presence_url else nobody),
    )
    app.extensions["chat_openapi"] = OPENAPI_FILE.read_text(encoding="utf-8")

    hops = settings.trusted_proxy_hops
    if hops > 0:  # behind nginx / an Ingress: the client address is in X-Forwarded-For
        # and the scheme (a Secure session cookie over https) in X-Forwarded-Proto
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]

    register_error_handlers(app)
    requestlog.install(app)
    for module in (auth, users, rooms, health):
        app.register_blueprint(module.bp)
    if background is not None:
        relay_thread = background

        @app.before_request
        def _start_relay() -> None:
            relay_thread.ensure_started()

    return app


def _engine_of(app: Flask) -> Engine:
    with app.app_context():
        return db.engine


def start_background(app: Flask) -> None:
    """Start this process's outbox relay now (gunicorn ``post_worker_init``), if it has one."""
    st = app.extensions.get(EXTENSION)
    if isinstance(st, AuthState) and st.background is not None:
        st.background.ensure_started()


def stop_background(app: Flask) -> None:
    """Stop this process's outbox relay (gunicorn ``worker_exit``); undelivered rows wait."""
    st = app.extensions.get(EXTENSION)
    if isinstance(st, AuthState) and st.background is not None:
        st.background.stop()
