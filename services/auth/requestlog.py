"""One structured log line and the metrics for every request (no bodies, no tokens)."""

from __future__ import annotations

import logging
import time

from flask import Flask, Response, g, request

from services.auth import metrics
from services.common.tokens import AccessClaims

access_log = logging.getLogger("chat.auth.access")


def install(app: Flask) -> None:
    @app.before_request
    def _start() -> None:
        g.started = time.perf_counter()

    @app.after_request
    def _done(response: Response) -> Response:
        elapsed = time.perf_counter() - g.get("started", time.perf_counter())
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.REQUESTS.labels(request.method, endpoint, str(response.status_code)).inc()
        metrics.LATENCY.labels(endpoint).observe(elapsed)
        claims = g.get("claims")
        access_log.info(
            "request",
            extra={
                "method": request.method,
                "path": request.path[:200],
                "endpoint": endpoint,
                "status": response.status_code,
                "duration_ms": round(elapsed * 1000, 2),
                "client": request.remote_addr,
                "user_id": claims.user_id if isinstance(claims, AccessClaims) else None,
            },
        )
        # how long the server took, for clients and benchmarks (Server-Timing); not on the
        # credential endpoints, where it would hand a cleaner timing signal to a guesser
        if not request.path.startswith("/api/auth/"):
            response.headers["Server-Timing"] = f"app;dur={elapsed * 1000:.1f}"
        return response
