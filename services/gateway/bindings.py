"""The bindings of a gateway's queue: wanted by reference count, applied by one task.

Whoever needs messages of a key (a room with local members, a user with local connections)
``acquire``s it and ``release``s it when done. One reconciler task turns the difference between
what is wanted and what is bound into pipelined ``bind_many`` calls, so a connect that needs
2,000 rooms costs a few round trips, not 2,000, and joins arriving together share one batch.
Unwanted bindings linger for ``linger`` seconds before they are removed: a reconnect storm
finds its rooms still bound, and delivery never depends on a binding being gone (a gateway
delivers by its own membership state).

After a broker reconnect the gateway's queue is new and bound to nothing: ``restore()`` binds
everything wanted again, in the order first wanted (the gateway's own keys come first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Iterable

from services.common.bus import Bus, PublishError

log = logging.getLogger("chat.gateway.bindings")

Key = tuple[str, str]  # (exchange, routing key)
BATCH = 2000


class _Waiter:
    __slots__ = ("future", "keys")

    def __init__(self, keys: set[Key], future: asyncio.Future[bool]) -> None:
        self.keys = keys
        self.future = future


class Bindings:
    def __init__(self, bus: Bus, queue: str, *, linger: float = 30.0) -> None:
        self.bus = bus
        self.queue = queue
        self.linger = linger
        self.refs: dict[Key, int] = {}
        self.bound: set[Key] = set()
        self.unwanted: dict[Key, float] = {}  # bound, no longer wanted: since when
        self._waiters: list[_Waiter] = []
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.batches = 0  # bind_many calls made (for tests and metrics)

    def __len__(self) -> int:
        return len(self.bound)

    # wanting -------------------------------------------------------------------------------
    def acquire(self, keys: Iterable[Key]) -> asyncio.Future[bool] | None:
        """Want these bindings: ``wait(keys)``."""
        keys = list(keys)
        for key in keys:
            self.refs[key] = self.refs.get(key, 0) + 1
            self.unwanted.pop(key, None)
        return self.wait(keys)

    def wait(self, keys: Iterable[Key]) -> asyncio.Future[bool] | None:
        """None if these bindings are all in place; else a future that becomes True once they
        are, or False if the broker was found unavailable (they are bound again after the
        reconnect: ``restore``)."""
        missing = {key for key in keys if key not in self.bound}
        if not missing:
            return None
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._waiters.append(_Waiter(missing, future))
        self._kick()
        return future

    def release(self, keys: Iterable[Key]) -> None:
        now = time.monotonic()
        for key in keys:
            n = self.refs.get(key, 0)
            if n <= 1:
                self.refs.pop(key, None)
                if key in self.bound:
                    self.unwanted[key] = now
            else:
                self.refs[key] = n - 1
        if self.linger <= 0:
            self._kick()

    def wanted(self, key: Key) -> bool:
        return key in self.refs

    # the reconciler ------------------------------------------------------------------------
    def start(self) -> None:
        self._wake = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="bindings")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        delay = 0.0
        while True:
            try:
                async with asyncio.timeout(max(1.0, self.linger / 4) if not delay else delay):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            try:
                await self._bind_missing()
                self._settle_bound()
                await self._unbind_unwanted()
                delay = 0.0
            except PublishError as exc:
                # the broker is away: waiters hear False now; restore() re-applies everything
                log.warning("bindings not applied: %s", exc)
                self._settle_waiters(False)
                delay = 1.0
            except Exception:
                log.exception("bindings reconciler failed")
                self._settle_waiters(False)
                delay = 1.0

    async def _bind_missing(self) -> None:
        while True:
            todo = [k for k in self.refs if k not in self.bound][:BATCH]
            if not todo:
                break
            await self.bus.bind_many(self.queue, todo)
            self.batches += 1
            self.bound.update(todo)
            self._settle_bound()

    async def _unbind_unwanted(self) -> None:
        now = time.monotonic()
        due = [k for k, since in self.unwanted.items() if now - since >= self.linger]
        for k in range(0, len(due), BATCH):
            part = [key for key in due[k : k + BATCH] if key not in self.refs]
            for key in due[k : k + BATCH]:
                self.unwanted.pop(key, None)
            if not part:
                continue
            self.bound.difference_update(part)  # not delivered-by anyway; a failure rebinds later
            await self.bus.unbind_many(self.queue, part)

    def _settle_bound(self) -> None:
        keep: list[_Waiter] = []
        for w in self._waiters:
            w.keys.difference_update(self.bound)
            if w.keys and any(k in self.refs for k in w.keys):
                keep.append(w)
            elif not w.future.done():  # all bound (or no longer wanted by anyone: never will)
                w.future.set_result(not w.keys)
        self._waiters = keep

    def _settle_waiters(self, result: bool) -> None:
        for w in self._waiters:
            if not w.future.done():
                w.future.set_result(result)
        self._waiters = []

    def restore(self) -> None:
        """After a reconnect: the queue is new and bound to nothing. Everything wanted is bound
        again, oldest wants first (the gateway's own keys, then rooms); ``wait`` tells when."""
        self.bound.clear()
        self.unwanted.clear()
        self._kick()
