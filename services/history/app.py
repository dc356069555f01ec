"""The history service as its own process (the scaled target):

    uvicorn services.history.app:create_app --factory      # or: python -m services history

It builds the engine, the bus and the revocation set, keeps the set live from the bus, runs the
writer and serves ``/api/history/...`` plus ``/healthz``, ``/readyz`` and ``/metrics``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.common.bus import create_bus
from services.common.observability import setup_logging
from services.common.revocations import follow_revocations
from services.common.settings import Settings, get_settings
from services.common.tokens import RevocationSet
from services.history.api import error_response, json_response
from services.history.service import HistoryService
from services.history.store import history_engine

log = logging.getLogger("chat.history")

HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def create_app(settings: Settings | None = None) -> Starlette:
    if settings is None:  # started as a process (uvicorn --factory): own the logging too
        settings = get_settings()
        setup_logging("history", settings.log_level, settings.log_json)
    engine = history_engine(settings.database_url)
    bus = create_bus(settings.broker_url, settings.history_delivery_limit)
    revoked = RevocationSet()
    service = HistoryService(settings, bus, engine, revoked)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await bus.connect()
        queue = f"history.{settings.gateway_id}.revocations"
        await follow_revocations(bus, engine, revoked, queue, settings.access_ttl)
        await service.start()
        log.info("history service started (broker %s)", bus.connected)
        try:
            yield
        finally:
            await service.stop()
            await bus.close()
            engine.dispose()

    async def healthz(request: Request) -> Response:
        return json_response({"status": "ok"})

    async def readyz(request: Request) -> Response:
        if await service.ready():
            return json_response({"status": "ready"})
        return error_response(503, "not_ready", "database or broker unavailable")

    async def metrics(request: Request) -> Response:
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = HTTP_CODES.get(status, "http_error")
        return error_response(status, code, str(getattr(exc, "detail", "error")))

    app = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            *service.routes,
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error},
    )
    app.state.history = service
    return app
