"""The ASGI application for a target: the components of ``targets.TARGETS`` on one bus, one
database engine and one revocation set. ``create_app()`` reads the settings (CHAT_TARGET)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from services.common.bus import create_bus
from services.common.db import make_engine
from services.common.observability import (
    install_task_dump,
    metrics_payload,
    proxied,
    setup_logging,
)
from services.common.outbox import OutboxRelay
from services.common.revocations import follow_revocations
from services.common.settings import Settings, get_settings
from services.common.tokens import RevocationSet
from services.targets import AUTH_PREFIXES, TARGETS

log = logging.getLogger("chat.app")

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
]


class SecurityHeaders:
    """Adds the CSP and friends to every HTTP response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in SECURITY_HEADERS if k not in names]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class PrefixDispatch:
    """Sends the auth service's path prefixes to the (WSGI) auth app, the rest to Starlette."""

    def __init__(self, app: ASGIApp, auth: ASGIApp) -> None:
        self.app = app
        self.auth = auth

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith(AUTH_PREFIXES):
            await self.auth(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or get_settings()
    setup_logging(settings.target, settings.log_level, settings.log_json)
    components = TARGETS[settings.target]
    if "history" in components:
        from services.history.store import history_engine

        engine = history_engine(settings.database_url)  # shorter MySQL I/O timeouts
    else:
        engine = make_engine(settings.database_url)
    bus = create_bus(settings.broker_url, settings.history_delivery_limit)
    revoked = RevocationSet()
    routes: list[BaseRoute] = []
    gateway = history = None
    relay: OutboxRelay | None = None

    if "history" in components:
        from services.history.service import HistoryService

        history = HistoryService(settings, bus, engine, revoked)
        routes += history.routes
    if "gateway" in components:
        from services.gateway.service import GatewayService

        gateway = GatewayService(settings, bus, engine, revoked)
        routes += gateway.routes
    auth_asgi: ASGIApp | None = None
    if "auth" in components:
        from a2wsgi import WSGIMiddleware

        from services.auth import create_app as create_auth_app

        relay = OutboxRelay(engine, bus, poll_interval=1.0, default_shards=settings.history_shards)
        presence = None
        if gateway is not None:  # the member lists ask this process's own gateway
            is_online = gateway.presence.is_online
            presence = lambda names, _token: {n for n in names if is_online(n)}  # noqa: E731
        flask_app = create_auth_app(settings, relay=relay, presence=presence)
        auth_asgi = WSGIMiddleware(flask_app, workers=8)  # type: ignore[arg-type,assignment]

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "ok", "target": settings.target})

    async def readyz(_: Request) -> Response:
        checks: dict[str, bool] = {"broker": bus.connected}
        if gateway is not None:
            checks["gateway"] = await gateway.ready()
        if history is not None:
            checks["history"] = await history.ready()
        if not gateway and not history:
            checks["database"] = await asyncio.to_thread(_db_ok, engine)
        ok = all(checks.values())
        return JSONResponse({"ready": ok, "checks": checks}, status_code=200 if ok else 503)

    async def metrics(request: Request) -> Response:
        if proxied(request.headers):
            return JSONResponse({"error": {"code": "not_found", "message": "no such path"}}, 404)
        body, ctype = metrics_payload()
        return Response(body, media_type=ctype)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        *routes,
    ]
    web = Path(settings.web_dir)
    if "web" in components and web.is_dir():
        routes.append(Mount("/", app=StaticFiles(directory=web, html=True), name="web"))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        install_task_dump()
        await _connect_with_retry(bus)
        tasks: list[asyncio.Task[None]] = []
        if history is not None:
            await history.start()
        if gateway is not None:
            await gateway.start()
        elif history is not None:
            await follow_revocations(
                bus,
                engine,
                revoked,
                f"history.{settings.gateway_id}.revocations",
                settings.access_ttl,
            )
        if relay is not None:
            tasks.append(asyncio.get_running_loop().create_task(relay.run()))
        try:
            yield
        finally:
            if gateway is not None:
                await gateway.stop()
            if history is not None:
                await history.stop()
            for task in tasks:
                task.cancel()
            await bus.close()
            engine.dispose()

    async def http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        code = {404: "not_found", 405: "method_not_allowed"}.get(status, "http_error")
        detail = getattr(exc, "detail", "") or code.replace("_", " ")
        return JSONResponse({"error": {"code": code, "message": str(detail)}}, status_code=status)

    app = Starlette(
        routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error}
    )
    app.router.redirect_slashes = False
    app.state.settings = settings
    app.state.bus = bus
    app.state.engine = engine
    app.state.gateway = gateway
    app.state.history = history
    app.state.relay = relay
    app.state.drain = gateway.stop if gateway is not None else None
    outer: ASGIApp = app if auth_asgi is None else PrefixDispatch(app, auth_asgi)
    app.state.asgi = SecurityHeaders(outer)
    return app


def _db_ok(engine: Any) -> bool:
    from sqlalchemy import text

    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True
    except Exception:
        return False


async def _connect_with_retry(bus: Any, attempts: int = 30) -> None:
    for i in range(attempts):
        try:
            await bus.connect()
            return
        except Exception as exc:
            if i == attempts - 1:
                raise
            log.warning("broker not reachable (%s); retrying", exc)
            await asyncio.sleep(min(2.0, 0.2 * (i + 1)))


def create_asgi(settings: Settings | None = None) -> ASGIApp:
    """The full ASGI callable (auth prefix dispatch and security headers included)."""
    app = create_app(settings)
    asgi: ASGIApp = app.state.asgi
    return asgi
