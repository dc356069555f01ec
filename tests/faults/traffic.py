"""Load while faults happen: senders that behave like a careful client, a readiness monitor, and
the end-of-scenario checks shared by every fault test.

A sender sends one message at a time in its room and waits for the answer. ``unavailable`` or
``rate_limited``: back off and send again with the same client_msg_id (and ``retry: true``); a
lost connection or no answer in ``answer_timeout``: the same once reconnected. Every attempt
and answer goes into the ledger, so "acked => in history once" can be checked at the end, and
"a send during an outage gets an error, not a hang" is the absence of ``timeout`` answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.faults.ledger import Ledger, Op
from tests.faults.peer import NotConnected, Peer

RETRYABLE = ("unavailable", "rate_limited")


class Traffic:
    def __init__(
        self,
        ledger: Ledger,
        senders: list[tuple[Peer, str]],
        *,
        interval: float = 0.05,
        answer_timeout: float = 12.0,
        body_size: int = 40,
    ) -> None:
        self.ledger = ledger
        self.senders = senders
        self.interval = interval
        self.answer_timeout = answer_timeout
        self.body_size = body_size
        self._stop = asyncio.Event()
        self._finish_by = float("inf")
        self._tasks: list[asyncio.Task[None]] = []
        self.unexpected: list[tuple[Op, dict[str, Any]]] = []

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._sender(peer, room, i))
            for i, (peer, room) in enumerate(self.senders)
        ]

    async def stop(self, finish_within: float = 60.0) -> None:
        """No new messages; the ones in flight keep retrying until acked (or the deadline)."""
        self._finish_by = time.monotonic() + finish_within
        self._stop.set()
        await asyncio.wait(self._tasks, timeout=finish_within + 15)
        for t in self._tasks:
            t.cancel()

    async def _sender(self, peer: Peer, room: str, index: int) -> None:
        seq = 0
        await asyncio.sleep(self.interval * (index % 20) / 20)  # spread the starts
        while not self._stop.is_set() and not peer.away:
            cmid = f"{peer.user.username}-{seq}"
            body = f"{cmid} " + "x" * max(0, self.body_size - len(cmid) - 1)
            op = self.ledger.begin(peer.user.id, peer.user.username, room, cmid, body)
            await self._deliver(peer, op)
            seq += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.interval)

    async def _deliver(self, peer: Peer, op: Op) -> None:
        backoff = 0.1
        while True:
            if time.monotonic() > self._finish_by or peer.away:
                op.gave_up = True
                return
            if not peer.connected.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(peer.connected.wait(), 1.0)
                continue
            self.ledger.attempt(op)
            started = time.monotonic()
            try:
                frame = await peer.send(
                    op.room, op.body, op.cmid, retry=op.attempts > 1, timeout=self.answer_timeout
                )
            except TimeoutError:
                self.ledger.no_answer(op, "timeout", time.monotonic() - started)
                continue
            except NotConnected:
                self.ledger.no_answer(op, "closed", time.monotonic() - started)
                await asyncio.sleep(backoff)  # never spin: the reconnect needs the loop
                backoff = min(backoff * 2, 1.0)
                continue
            self.ledger.answered(op, frame, time.monotonic() - started)
            if frame["type"] == "ack":
                return
            if frame.get("code") not in RETRYABLE:
                self.unexpected.append((op, frame))
                return
            await asyncio.sleep(backoff)
            backoff = min(1.0, backoff * 2)


@dataclass
class Transition:
    at: float
    service: str
    ready: bool


@dataclass
class ReadyMonitor:
    """Polls /readyz of every service and records each change (for detection and recovery)."""

    services: dict[str, str]  # name -> base URL
    interval: float = 0.2
    state: dict[str, bool] = field(default_factory=dict)
    transitions: list[Transition] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=2) as http:
            while True:
                await asyncio.gather(*(self._probe(http, n, u) for n, u in self.services.items()))
                await asyncio.sleep(self.interval)

    async def _probe(self, http: httpx.AsyncClient, name: str, url: str) -> None:
        try:
            ok = (await http.get(url + "/readyz")).status_code == 200
        except httpx.HTTPError:
            ok = False
        if self.state.get(name) != ok:
            self.state[name] = ok
            self.transitions.append(Transition(time.monotonic(), name, ok))

    def first(self, service: str, ready: bool, after: float) -> float | None:
        for t in self.transitions:
            if t.service == service and t.ready == ready and t.at >= after:
                return t.at
        return None

    async def wait_all(self, ready: bool, timeout: float, names: list[str] | None = None) -> float:
        names = names or list(self.services)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.state.get(n) is ready for n in names):
                return time.monotonic()
            await asyncio.sleep(0.05)
        raise AssertionError(
            f"services not all ready={ready} within {timeout}s: "
            f"{ {n: self.state.get(n) for n in names} }"
        )


async def wait_until(
    pred: Any, timeout: float, what: str, interval: float = 0.05, detail: Any = None
) -> float:
    """Await a condition with a deadline; the time it became true. ``detail()`` explains a
    failure."""
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic()
        if time.monotonic() > deadline:
            extra = f" ({detail()})" if detail is not None else ""
            raise AssertionError(f"not within {timeout}s: {what}{extra}")
        await asyncio.sleep(interval)


def gaps(peers: list[Peer], rows: dict[str, dict[str, Any]], ledger: Ledger) -> list[str]:
    """Per peer and room: stored messages missing from its merged view (live + fetched).

    A peer's own message that was never acked to it (the answer was lost) is not a gap: only a
    later catch-up can bring it, and the client retries it anyway."""
    problems = []
    by_room: dict[str, set[str]] = {}
    for mid, row in rows.items():
        by_room.setdefault(row["room"], set()).add(mid)
    own_unacked = {(op.sender_id, op.cmid) for op in ledger.ops.values() if op.acked is None}
    for p in peers:
        for room in p.rooms:
            missing = by_room.get(room, set()) - p.view(room)
            missing = {
                m
                for m in missing
                if (rows[m]["sender_id"], rows[m]["client_msg_id"]) not in own_unacked
                or rows[m]["sender_id"] != p.user.id
            }
            extra = p.view(room) - by_room.get(room, set())
            if missing:
                problems.append(
                    f"{p.user.username} misses {len(missing)} in {room}: {sorted(missing)[:3]}"
                    f" ({why_missed(p, [rows[m] for m in sorted(missing)[:2]], ledger)})"
                )
            if extra:
                problems.append(f"{p.user.username} holds {len(extra)} unknown ids in {room}")
        if p.live_dups:
            problems.append(f"{p.user.username} got {p.live_dups} duplicate live deliveries")
    return problems


def why_missed(p: Peer, missed: list[dict[str, Any]], ledger: Ledger) -> str:
    """What a report of a gap needs: when each missed message was sent and acked, and what the
    peer went through around then (times in seconds from the send)."""
    by_key = {(op.sender_id, op.cmid): op for op in ledger.ops.values()}
    out = []
    for row in missed:
        op = by_key.get((row["sender_id"], row["client_msg_id"]))
        if op is None:
            out.append(f"{row['id']}: not in the ledger")
            continue
        t0 = op.started
        acked = f"{op.acked_at - t0:+.2f}" if op.acked_at is not None else "never"
        trail = [(round(t - t0, 2), what) for t, what in op.trail][:4]
        near = [(round(t - t0, 2), k) for t, k in p.events if -30 < t - t0 < 60][:12]
        out.append(
            f"{row['id']} from {op.sender} (own: {op.sender_id == p.user.id}), acked {acked}, "
            f"attempts {trail}; peer on {p.current_gateway}, events {near}, "
            f"history errors {p.history_errors[-5:]} of {len(p.history_errors)}, "
            f"cursor {p.cursor.get(row['room'])}, sent_at {row['sent_at']}, catch-ups "
            f"{[(round(t - t0, 2), a, ids, n) for t, r, a, ids, n in p.catch_ups if r == row['room']][-4:]}"
        )
    return "; ".join(out)


async def wait_no_gaps(
    peers: list[Peer],
    rows: dict[str, dict[str, Any]],
    ledger: Ledger,
    timeout: float = 20.0,
    catch_up_timeout: float = 120.0,
) -> list[str]:
    """Live deliveries and catch-ups may still be in flight: wait for them, then report.

    First every client's catch-ups must have finished (after a storm, a thousand clients page
    through history at once and an overloaded machine takes a while: that is slowness, not a
    gap); a catch-up still running after ``catch_up_timeout`` is reported as such."""
    catch_up_deadline = time.monotonic() + catch_up_timeout
    while any(p.catching() for p in peers) and time.monotonic() < catch_up_deadline:
        await asyncio.sleep(0.2)
    busy = [p.user.username for p in peers if p.catching()]
    if busy:
        return [f"catch-ups still running after {catch_up_timeout}s: {busy[:5]} ({len(busy)})"]
    deadline = time.monotonic() + timeout
    while True:
        problems = gaps(peers, rows, ledger)
        if not problems or time.monotonic() > deadline:
            return problems
        await asyncio.sleep(0.2)
