"""The outbox relay of a scaled auth worker: a daemon thread with its own asyncio loop.

Started lazily in the process that serves requests (after gunicorn forks: on the first request
or from the ``post_worker_init`` hook), never in a parent that forks, since a thread does not
survive a fork. Connecting to the broker is retried forever with backoff; until it succeeds
the outbox simply keeps the events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable

from sqlalchemy.engine import Engine

from services.common.bus import Bus
from services.common.outbox import OutboxRelay

log = logging.getLogger("chat.auth.relay")


class BackgroundRelay:
    def __init__(
        self,
        engine: Callable[[], Engine],
        bus_factory: Callable[[], Bus],
        poll_interval: float = 1.0,
        default_shards: int = 1,
    ) -> None:
        self._engine = engine
        self._bus_factory = bus_factory
        self._poll_interval = poll_interval
        self._default_shards = default_shards
        self._lock = threading.Lock()
        self._pid: int | None = None
        self._relay: OutboxRelay | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.bus: Bus | None = None

    def ensure_started(self) -> OutboxRelay:
        """The relay of this process, started on first use (thread-safe, fork-aware)."""
        relay = self._relay
        if relay is not None and self._pid == os.getpid():
            return relay
        with self._lock:
            if self._relay is None or self._pid != os.getpid():
                self._pid = os.getpid()
                self.bus = self._bus_factory()
                self._relay = OutboxRelay(
                    self._engine(), self.bus, self._poll_interval, self._default_shards
                )
                ready = threading.Event()
                self._thread = threading.Thread(
                    target=self._run,
                    args=(self._relay, self.bus, ready),
                    name="outbox-relay",
                    daemon=True,
                )
                self._thread.start()
                ready.wait(5.0)
            return self._relay

    @property
    def connected(self) -> bool:
        return self.bus is not None and self.bus.connected

    def _run(self, relay: OutboxRelay, bus: Bus, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._main(relay, bus))
            loop.call_soon(ready.set)
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            try:
                loop.run_until_complete(bus.close())
                loop.run_until_complete(loop.shutdown_default_executor())
            except Exception:
                log.debug("outbox relay shutdown", exc_info=True)
            loop.close()

    async def _main(self, relay: OutboxRelay, bus: Bus) -> None:
        delay = 0.5
        while True:
            try:
                await bus.connect()
                break
            except Exception as exc:  # the broker is away: the outbox keeps the events
                log.warning("outbox relay cannot reach the broker (%s); retrying", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 15.0)
        log.info("outbox relay connected")
        await relay.run()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the relay thread (tests, orderly shutdown)."""
        loop, task, thread = self._loop, self._task, self._thread
        deadline = time.monotonic() + timeout
        # Cancel until the thread is gone: on Python 3.11 asyncio.wait_for can swallow a
        # cancellation that races with its inner wait finishing (a kick).
        while thread is not None and thread.is_alive() and time.monotonic() < deadline:
            if loop is not None and task is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(task.cancel)
            thread.join(0.05)
        self._relay = None
        self._pid = None
