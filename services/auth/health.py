"""``/healthz`` (alive), ``/readyz`` (database and broker usable), ``/metrics`` (Prometheus)."""

from __future__ import annotations

import logging

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from services.auth.extensions import db
from services.auth.state import state
from services.common.observability import metrics_payload

bp = Blueprint("health", __name__)
log = logging.getLogger("chat.auth")


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    checks: dict[str, str] = {}
    try:
        db.session.execute(text("SELECT 1"))
        checks["database"] = "ok"
    except Exception as exc:
        log.warning("readiness: database unavailable (%s)", type(exc).__name__)
        db.session.rollback()
        checks["database"] = "unavailable"
    relay = state().active_relay()
    if relay is None:
        checks["broker"] = "none"
    else:
        checks["broker"] = "ok" if relay.bus.connected else "unavailable"
    ready = all(v in ("ok", "none") for v in checks.values())
    return jsonify({"status": "ok" if ready else "unavailable", **checks}), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Response:
    payload, content_type = metrics_payload()
    return Response(payload, content_type=content_type)
