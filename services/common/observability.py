"""Structured logs (one JSON object a line) and the health/metrics endpoints every service has."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import signal
import sys
import time
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup_logging(service: str, level: str = "INFO", json_lines: bool = True) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if json_lines:
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("aio_pika").setLevel("WARNING")
    logging.getLogger("aiormq").setLevel("WARNING")


def metrics_payload() -> tuple[bytes, str]:
    return generate_latest(), CONTENT_TYPE_LATEST


def proxied(headers: Any) -> bool:
    """True for a request that came through the load balancer (it adds X-Forwarded-For).
    Prometheus and the kubelet reach pods directly; the outside world does not need /metrics."""
    return headers.get("x-forwarded-for") is not None


def install_task_dump() -> None:
    """``kill -USR1 <pid>`` logs the stack of every asyncio task of the running loop (one
    warning): what a process that looks alive but does nothing is waiting for."""
    loop = asyncio.get_running_loop()

    def dump() -> None:
        tasks = asyncio.all_tasks(loop)
        out = io.StringIO()
        for task in tasks:
            out.write(f"--- {task.get_name()} {task.get_coro()!r}\n")
            task.print_stack(limit=20, file=out)
        logging.getLogger("chat.debug").warning(
            "asyncio task dump (%d tasks):\n%s", len(tasks), out.getvalue()
        )

    try:
        loop.add_signal_handler(signal.SIGUSR1, dump)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or no signals
        pass
