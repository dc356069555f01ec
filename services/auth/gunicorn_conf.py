"""gunicorn settings for the auth service (scaled mode).

    gunicorn -c python:services.auth.gunicorn_conf 'services.auth:create_app()'

Bind address from the settings (CHAT_HOST/CHAT_PORT via services.common.settings); command
line flags (-w, -b, ...) override anything here. Threads suit this app: argon2 hashing and
database calls release the GIL. Each worker runs its own outbox relay thread, started after
the fork (a thread does not survive one).
"""

from __future__ import annotations

import os
from typing import Any

from services.common.observability import setup_logging
from services.common.settings import get_settings

_settings = get_settings()

bind = [f"{_settings.host}:{_settings.port}"]
worker_class = "gthread"
workers = _settings.auth_workers or max(2, min(4, os.cpu_count() or 1))
threads = 8
timeout = 30
graceful_timeout = 20
keepalive = 5
preload_app = False
accesslog = None  # the app logs one JSON line per request itself
errorlog = "-"
# gunicorn's own messages as JSON lines too, like the app's (CHAT_LOG_JSON=0: plain text)
_json_logging: dict[str, Any] = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "services.common.observability.JsonFormatter", "service": "auth"}
    },
    "handlers": {
        "stderr": {
            "class": "logging.StreamHandler",
            "formatter": "json",
            "stream": "ext://sys.stderr",
        }
    },
    "root": {"handlers": ["stderr"], "level": "INFO"},
    "loggers": {
        "gunicorn.error": {
            "handlers": ["stderr"],
            "level": _settings.log_level,
            "propagate": False,
        },
        "gunicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
    },
}
logconfig_dict: dict[str, Any] = _json_logging if _settings.log_json else {}
# No gunicornc control socket: its default path ($HOME/.gunicorn/gunicorn.ctl) would be shared
# by every gunicorn on the host, and a read-only container has no use for it.
control_socket_disable = True


def on_starting(server: Any) -> None:
    setup_logging("auth", _settings.log_level, _settings.log_json)


def post_worker_init(worker: Any) -> None:
    setup_logging("auth", _settings.log_level, _settings.log_json)
    from services.auth import start_background

    app = getattr(worker, "wsgi", None)
    if app is not None:
        start_background(app)


def worker_exit(server: Any, worker: Any) -> None:
    from services.auth import stop_background

    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_background(app)
