"""uvicorn with a graceful drain: on SIGTERM/SIGINT the gateway first stops intake, lets
in-flight sends be acked and closes its sockets with 1012, then uvicorn shuts down."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn

from services.common.settings import Settings


class DrainingServer(uvicorn.Server):
    def __init__(
        self, config: uvicorn.Config, drain: Callable[[], Awaitable[None]] | None, grace: float
    ) -> None:
        super().__init__(config)
        self.drain = drain
        self.grace = grace
        self._draining: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.drain is None or self._draining is not None:
            super().handle_exit(sig, frame)
            return
        self._draining = asyncio.get_event_loop().create_task(self._drain_then_exit(sig, frame))

    async def _drain_then_exit(self, sig: int, frame: FrameType | None) -> None:
        try:
            assert self.drain is not None
            await asyncio.wait_for(self.drain(), self.grace + 1)
        except Exception:
            pass
        finally:
            super().handle_exit(sig, frame)


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws="websockets-sansio",
        ws_max_size=settings.max_frame_bytes,  # uvicorn's default is 16 MiB
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        # chat frames are small: compression would cost ~40 KiB per browser socket for little
        ws_per_message_deflate=False,
        lifespan="on",
        log_config=None,
        access_log=False,
        # X-Forwarded-For / -Proto only from the proxies the operator names: by default none
        # (uvicorn's own default trusts loopback, i.e. every local client, and "*" anyone)
        proxy_headers=bool(settings.forwarded_allow_ips),
        forwarded_allow_ips=list(settings.forwarded_allow_ips),
        timeout_graceful_shutdown=int(settings.shutdown_grace) + 1,
    )


def serve(settings: Settings) -> None:
    from services.app import create_app

    app = create_app(settings)
    config = uvicorn_config(app.state.asgi, settings)
    gc.collect()
    gc.freeze()  # what exists now lives for the process: keep it out of every collection
    # a message allocates a few short-lived containers (frames, dicts, tasks) that refcounting
    # frees; a young-generation pass every 700 allocations (the default) cost ~12% of a busy
    # gateway's CPU in the profile: pass far less often (issue 15, measured with py-spy)
    gc.set_threshold(50_000, 20, 100)
    server = DrainingServer(config, app.state.drain, settings.shutdown_grace)
    server.run()
