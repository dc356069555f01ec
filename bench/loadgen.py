"""The load generator: one async process running one scenario, bounded in count and time.

    python -m bench.loadgen '<json spec>'      # prints one JSON object (the result) on stdout

Scenarios (``spec["scenario"]``):

- ``pairs``: sender→receiver pairs (a direct room each, or a relay target, or a socket.io
  room). ``mode: "closed"``: each sender keeps at most ``window`` messages sent but not yet
  delivered to its receiver, so the backlog is bounded by construction and the delivered rate
  is a sustained rate. ``mode: "rate"``: open loop at ``rate`` msg/s in total, on a schedule
  (late sends go at once, never skipped). Latency = send → receipt of the ``message`` frame.
- ``fanout``: one member sends to a group; latency from send to the LAST member's receipt.
- ``idle``: open sockets in steps, reading the gateway's RSS (``/proc/<pid>/status``) at each.
- ``login``: concurrent ``POST /api/auth/login`` for a fixed time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection

from bench.common import raise_nofile, rss_kib, summary_ms
from bench.protocols import ACK, ERROR, MESSAGE, PROTOCOLS, Protocol

clock = time.perf_counter_ns  # CLOCK_MONOTONIC: the same clock in every process of the machine


def _pad(n: int) -> str:
    return "x" * max(0, n)


# pairs ------------------------------------------------------------------------------------
@dataclass
class Pair:
    idx: int
    sender: ClientConnection
    receiver: ClientConnection
    target: str
    window: asyncio.Semaphore
    send_ns: list[int] = field(default_factory=list)
    sent: int = 0
    acked: int = 0
    delivered: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    ack_lat: list[float] = field(default_factory=list)
    # closed loop: a window slot is freed once a message is both acked and delivered
    half_done: set[int] = field(default_factory=set)

    def settle(self, seq: int) -> None:
        if seq in self.half_done:
            self.half_done.discard(seq)
            self.window.release()
        else:
            self.half_done.add(seq)

    def free(self, seq: int) -> None:
        self.half_done.discard(seq)
        self.window.release()


class PairsRun:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.proto: Protocol = PROTOCOLS[spec.get("protocol", "chat")]()
        self.mode = spec.get("mode", "closed")
        self.duration = float(spec.get("duration", 5))
        self.warmup = float(spec.get("warmup", 1))
        self.window = int(spec.get("window", 16))
        self.rate = float(spec.get("rate", 0))
        self.body_pad = int(spec.get("body_bytes", 64))
        self.tag = str(spec.get("tag") or os.urandom(4).hex())  # client_msg_ids unique per run
        self.pairs: list[Pair] = []
        # (send_ns, latency_s, latency_from_schedule_s) of every delivered message
        self.lat: list[tuple[int, float, float]] = []
        self.recv_ns: list[int] = []
        self.all_delivered = asyncio.Event()
        self.stop_sending = False

    async def setup(self) -> None:
        sem = asyncio.Semaphore(64)

        async def one(i: int, p: dict[str, Any]) -> Pair:
            async with sem:
                s = await self.proto.open(p["send_url"], p["send_auth"])
                r = await self.proto.open(p["recv_url"], p["recv_auth"])
            return Pair(i, s, r, p["target"], asyncio.Semaphore(self.window))

        self.pairs = list(
            await asyncio.gather(*(one(i, p) for i, p in enumerate(self.spec["pairs"])))
        )
        # let the servers finish what a connect starts in the background (bindings, the
        # socket.io manager's listener, which starts on a process's first client)
        await asyncio.sleep(float(self.spec.get("settle", 1.0)))

    async def _read_sender(self, pair: Pair) -> None:
        proto = self.proto
        closed = self.mode == "closed"
        with contextlib.suppress(Exception):
            async for raw in pair.sender:
                if await proto.on_raw(pair.sender, raw):
                    continue
                f = proto.parse(raw)
                if f.kind == ACK:
                    pair.acked += 1
                    seq = int(f.ident.rsplit("-", 1)[-1])
                    if 0 <= seq < len(pair.send_ns):
                        pair.ack_lat.append((clock() - pair.send_ns[seq]) / 1e9)
                    if closed:
                        pair.settle(seq)
                elif f.kind == ERROR:
                    pair.errors[f.code] = pair.errors.get(f.code, 0) + 1
                    if closed and f.ident:
                        pair.free(int(f.ident.rsplit("-", 1)[-1]))  # refused: never delivered

    async def _read_receiver(self, pair: Pair) -> None:
        proto = self.proto
        lat, recv_ns = self.lat, self.recv_ns
        closed = self.mode == "closed"
        with contextlib.suppress(Exception):
            async for raw in pair.receiver:
                if await proto.on_raw(pair.receiver, raw):
                    continue
                f = proto.parse(raw)
                if f.kind != MESSAGE:
                    continue
                now = clock()
                parts = f.body.split(" ", 3)
                sched, sent = int(parts[0]), int(parts[1])
                lat.append((sent, (now - sent) / 1e9, (now - sched) / 1e9))
                recv_ns.append(now)
                pair.delivered += 1
                if closed:
                    pair.settle(int(parts[2]))
                if self.stop_sending and self._done():
                    self.all_delivered.set()

    def _done(self) -> bool:
        return all(p.delivered >= p.sent for p in self.pairs)

    async def _send(self, pair: Pair, sched: int, seq: int) -> None:
        now = clock()
        pair.send_ns.append(now)
        body = f"{sched} {now} {seq} {_pad(self.body_pad - 40)}"
        await pair.sender.send(
            self.proto.send_frame(pair.target, body, f"{self.tag}p{pair.idx}-{seq}", seq)
        )
        pair.sent += 1

    async def _closed_sender(self, pair: Pair) -> None:
        seq = 0
        while not self.stop_sending:
            await pair.window.acquire()
            if self.stop_sending:
                return
            await self._send(pair, clock(), seq)
            seq += 1

    async def _rate_sender(self, pair: Pair, t0: int, end: int) -> None:
        per = self.rate / len(self.pairs)
        interval = int(1e9 / per)
        sched = t0 + int(interval * pair.idx / len(self.pairs))  # stagger the pairs
        seq = 0
        while sched < end and not self.stop_sending:
            now = clock()
            if sched > now:
                await asyncio.sleep((sched - now) / 1e9)
            await self._send(pair, sched, seq)
            seq += 1
            sched += interval

    async def run(self) -> dict[str, Any]:
        await self.setup()
        readers = [
            asyncio.create_task(fn(p))
            for p in self.pairs
            for fn in (self._read_sender, self._read_receiver)
        ]
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = clock()
        end = t0 + int(self.duration * 1e9)
        if self.mode == "closed":
            senders = [asyncio.create_task(self._closed_sender(p)) for p in self.pairs]
        else:
            senders = [asyncio.create_task(self._rate_sender(p, t0, end)) for p in self.pairs]
        await asyncio.sleep(max(0.0, (end - clock()) / 1e9))
        self.stop_sending = True
        for p in self.pairs:  # wake closed-loop senders blocked on their window
            p.window.release()
        await asyncio.gather(*senders, return_exceptions=True)
        t_stop = clock()
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        drain_timeout = float(self.spec.get("drain_timeout", 10))
        if not self._done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.all_delivered.wait(), drain_timeout)
        drained_s = (clock() - t_stop) / 1e9
        # give late acks a moment, then close
        for _ in range(100):  # at most 2 s
            if all(p.acked + sum(p.errors.values()) >= p.sent for p in self.pairs):
                break
            await asyncio.sleep(0.02)
        for t in readers:
            t.cancel()
        await asyncio.gather(
            *(c.close() for p in self.pairs for c in (p.sender, p.receiver)),
            return_exceptions=True,
        )
        return self._result(t0, t_stop, drained_s, ru0, ru1)

    def _result(
        self,
        t0: int,
        t_stop: int,
        drained_s: float,
        ru0: resource.struct_rusage,
        ru1: resource.struct_rusage,
    ) -> dict[str, Any]:
        w0 = t0 + int(self.warmup * 1e9)
        window_s = max(1e-6, (t_stop - w0) / 1e9)
        in_window = [x for x in self.lat if x[0] >= w0]
        recv_in_window = sum(1 for r in self.recv_ns if w0 <= r <= t_stop)
        sent = sum(p.sent for p in self.pairs)
        delivered = sum(p.delivered for p in self.pairs)
        errors: dict[str, int] = {}
        for p in self.pairs:
            for k, v in p.errors.items():
                errors[k] = errors.get(k, 0) + v
        q = len(in_window) // 4
        by_time = sorted(in_window)
        first = summary_ms(x[1] for x in by_time[:q]) if q else {}
        last = summary_ms(x[1] for x in by_time[-q:]) if q else {}
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        return {
            "protocol": self.proto.name,
            "tag": self.tag,
            "mode": self.mode,
            "pairs": len(self.pairs),
            "window": self.window if self.mode == "closed" else None,
            "offered_rate": self.rate if self.mode == "rate" else None,
            "duration_s": round((t_stop - t0) / 1e9, 2),
            "sent": sent,
            "acked": sum(p.acked for p in self.pairs),
            "delivered": delivered,
            "missing": sent - delivered,
            "errors": errors,
            "drain_s": round(drained_s, 2),
            "delivered_rate": round(recv_in_window / window_s, 1),
            "sent_rate": round(
                sum(1 for p in self.pairs for s in p.send_ns if s >= w0) / window_s, 1
            ),
            "latency_ms": summary_ms(x[1] for x in in_window),
            "latency_from_schedule_ms": summary_ms(x[2] for x in in_window),
            "ack_latency_ms": summary_ms(x for p in self.pairs for x in p.ack_lat),
            "latency_first_quarter_ms": first,
            "latency_last_quarter_ms": last,
            "generator_cpu_pct": round(100 * cpu / max(1e-6, (t_stop - t0) / 1e9), 1),
        }


SUSTAINED_P99_MS = 1000.0
VERIFY_FRACTIONS = (0.9, 0.7, 0.5, 0.35)


def is_sustained(r: dict[str, Any]) -> bool:
    """An open-loop run the system kept up with: every message delivered and acked, no errors,
    the latency did not grow over the run (last quarter's p50 <= 2 x first's + 20 ms) and no
    standing queue (p99 <= 1 s)."""
    first = r["latency_first_quarter_ms"].get("p50") or 0
    last = r["latency_last_quarter_ms"].get("p50") or 0
    p99 = r["latency_ms"].get("p99")
    return bool(
        r["missing"] == 0
        and not r["errors"]
        and r["acked"] >= r["sent"]
        and last <= 2 * first + 20
        and p99 is not None
        and p99 <= SUSTAINED_P99_MS
    )


def find_sustained(
    closed_rate: float, run: Any, fractions: tuple[float, ...] = VERIFY_FRACTIONS
) -> dict[str, Any]:
    """The highest verified sustained rate: open-loop runs at falling fractions of the
    closed-loop rate, stopping at the first one the system keeps up with."""
    tries = []
    for f in fractions:
        r = run(closed_rate * f)
        r["fraction"] = f
        r["sustained"] = is_sustained(r)
        tries.append(r)
        if r["sustained"]:
            return {"sustained_rate": r["delivered_rate"], "fraction": f, "tries": tries}
    return {"sustained_rate": None, "fraction": None, "tries": tries}


# fan-out ----------------------------------------------------------------------------------
async def fanout(spec: dict[str, Any]) -> dict[str, Any]:
    proto: Protocol = PROTOCOLS[spec.get("protocol", "chat")]()
    members = spec["members"]  # [{"url", "auth"}], members[0] sends
    room = spec["room"]
    n, rate = int(spec["messages"]), float(spec["rate"])
    tag = str(spec.get("tag") or os.urandom(4).hex())
    sem = asyncio.Semaphore(32)

    async def open_one(m: dict[str, Any]) -> ClientConnection:
        async with sem:
            return await proto.open(m["url"], m["auth"])

    conns = list(await asyncio.gather(*(open_one(m) for m in members)))
    expect = len(conns) - 1
    send_ns: dict[int, int] = {}
    got: dict[int, int] = {}
    last: dict[int, int] = {}
    every: list[float] = []
    done = asyncio.Event()
    acked = 0

    async def reader(ws: ClientConnection) -> None:
        with contextlib.suppress(Exception):
            async for raw in ws:
                if await proto.on_raw(ws, raw):
                    continue
                f = proto.parse(raw)
                if f.kind != MESSAGE:
                    continue
                now = clock()
                parts = f.body.split(" ", 3)
                seq, sent = int(parts[2]), int(parts[1])
                got[seq] = got.get(seq, 0) + 1
                last[seq] = max(last.get(seq, 0), now)
                every.append((now - sent) / 1e9)
                if len(send_ns) == n and all(got.get(s, 0) >= expect for s in send_ns):
                    done.set()

    async def sender_reader(ws: ClientConnection) -> None:
        nonlocal acked
        with contextlib.suppress(Exception):
            async for raw in ws:
                if await proto.on_raw(ws, raw):
                    continue
                if proto.parse(raw).kind == ACK:
                    acked += 1

    await asyncio.sleep(float(spec.get("settle", 0.5)))
    tasks = [asyncio.create_task(reader(c)) for c in conns[1:]]
    tasks.append(asyncio.create_task(sender_reader(conns[0])))
    t0 = clock()
    interval = int(1e9 / rate)
    for seq in range(n):
        sched = t0 + seq * interval
        now = clock()
        if sched > now:
            await asyncio.sleep((sched - now) / 1e9)
        now = clock()
        send_ns[seq] = now
        body = f"{sched} {now} {seq} " + _pad(24)
        await conns[0].send(proto.send_frame(room, body, f"{tag}f-{seq}", seq))
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(done.wait(), float(spec.get("drain_timeout", 10)))
    for t in tasks:
        t.cancel()
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    complete = [s for s in send_ns if got.get(s, 0) >= expect]
    return {
        "protocol": proto.name,
        "members": len(conns),
        "receivers_per_message": expect,
        "messages": n,
        "rate": rate,
        "acked": acked,
        "complete": len(complete),
        "deliveries": sum(got.values()),
        "expected_deliveries": n * expect,
        "last_member_latency_ms": summary_ms((last[s] - send_ns[s]) / 1e9 for s in complete),
        "per_delivery_latency_ms": summary_ms(every),
        "deliveries_per_s": round(
            sum(got.values()) / max(1e-6, (max(last.values(), default=t0) - t0) / 1e9), 1
        ),
    }


# idle sockets -----------------------------------------------------------------------------
async def idle(spec: dict[str, Any]) -> dict[str, Any]:
    proto: Protocol = PROTOCOLS[spec.get("protocol", "chat")]()
    proto.compression = spec.get("compression")
    url, tokens, pid = spec["url"], spec["tokens"], int(spec["pid"])
    steps = [int(s) for s in spec["steps"]]
    conc = int(spec.get("concurrency", 100))
    settle = float(spec.get("settle", 2))
    conns: list[ClientConnection] = []
    failures = 0
    keep: list[asyncio.Task[None]] = []

    async def drain(ws: ClientConnection) -> None:
        # read (and drop) presence frames so nothing piles up in the client
        with contextlib.suppress(Exception):
            async for raw in ws:
                await proto.on_raw(ws, raw)

    async def settle_rss() -> int:
        """The gateway's RSS once it stops moving (or after ``settle`` x 3 seconds)."""
        prev = rss_kib(pid)
        for _ in range(3):
            await asyncio.sleep(settle)
            cur = rss_kib(pid)
            if abs(cur - prev) < 256:
                return cur
            prev = cur
        return prev

    base = await settle_rss()
    self_base = rss_kib(os.getpid())
    out_steps = []
    sem = asyncio.Semaphore(conc)

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                ws = await proto.open(url, tokens[i % len(tokens)])
            except Exception:
                failures += 1
                return
        conns.append(ws)
        keep.append(asyncio.create_task(drain(ws)))

    for target in steps:
        t0 = time.perf_counter()
        need = target - len(conns)
        await asyncio.gather(*(one(len(conns) + i) for i in range(need)))
        elapsed = time.perf_counter() - t0
        rss = await settle_rss()
        out_steps.append(
            {
                "sockets": len(conns),
                "target": target,
                "connect_rate_per_s": round(need / max(1e-6, elapsed), 1),
                "gateway_rss_kib": rss,
                "gateway_rss_base_kib": base,
                "kib_per_socket": round((rss - base) / max(1, len(conns)), 2),
                "generator_kib_per_socket": round(
                    (rss_kib(os.getpid()) - self_base) / max(1, len(conns)), 2
                ),
                "failures": failures,
            }
        )
    # still alive? every socket open, and a sample answers a ping
    alive = sum(1 for c in conns if c.state.name == "OPEN")
    for t in keep:
        t.cancel()
    await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)
    return {
        "steps": out_steps,
        "open_at_end": alive,
        "failures": failures,
        "compression": proto.compression,
    }


# login rate -------------------------------------------------------------------------------
async def login(spec: dict[str, Any]) -> dict[str, Any]:
    import httpx

    url, users, password = spec["url"], spec["users"], spec["password"]
    duration, conc = float(spec["duration"]), int(spec["concurrency"])
    lat: list[float] = []
    codes: dict[str, int] = {}
    end = 0.0

    async def worker(i: int, client: httpx.AsyncClient) -> None:
        k = i
        while time.perf_counter() < end:
            t = time.perf_counter()
            r = await client.post(
                url + "/api/auth/login",
                json={"username": users[k % len(users)], "password": password},
            )
            lat.append(time.perf_counter() - t)
            codes[str(r.status_code)] = codes.get(str(r.status_code), 0) + 1
            k += conc

    async with httpx.AsyncClient(timeout=30) as client:
        # the window opens once the client exists (its TLS context alone took seconds on a
        # machine at 99 % CPU pressure, and the smoke run's 2 s window closed before any login)
        t0 = time.perf_counter()
        end = t0 + duration
        await asyncio.gather(*(worker(i, client) for i in range(conc)))
    elapsed = time.perf_counter() - t0
    ok = codes.get("200", 0)
    return {
        "duration_s": round(elapsed, 2),
        "concurrency": conc,
        "logins": ok,
        "codes": codes,
        "logins_per_s": round(ok / elapsed, 1),
        "latency_ms": summary_ms(lat),
    }


async def amain(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec["scenario"]
    async with asyncio.timeout(float(spec.get("timeout", 300))):
        if kind == "pairs":
            return await PairsRun(spec).run()
        if kind == "fanout":
            return await fanout(spec)
        if kind == "idle":
            return await idle(spec)
        if kind == "login":
            return await login(spec)
    raise SystemExit(f"unknown scenario {kind!r}")


def main() -> None:
    arg = sys.argv[1]
    spec = json.loads(open(arg).read() if not arg.lstrip().startswith("{") else arg)
    raise_nofile()
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    result = runner(amain(spec))
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
