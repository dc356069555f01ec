"""The scenarios on our scaled mode: real processes via ``tools.cluster.Cluster`` (gunicorn auth,
uvicorn gateways, history writer) on its own RabbitMQ vhost and MySQL database; clients connect
to the gateways directly (no nginx). Each load runs in its own generator process
(bench/loadgen.py); this process sets up users and rooms, reads /proc and the database, and
prints one JSON object.

    python -m bench.scaled '<json spec>'     (bench/run.py passes the full or the smoke spec)
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from bench.common import (
    PYTHON,
    ROOT,
    CpuMeter,
    amqp_url,
    children,
    cpu_seconds,
    create_database,
    create_vhost,
    delete_vhost,
    drop_database,
    find_pids,
    log,
    mysql_rows,
    mysql_url,
    raise_nofile,
    run_json,
    summary_ms,
)
from bench.loadgen import VERIFY_FRACTIONS, find_sustained
from tools.cluster import Cluster

PASSWORD = "correct horse battery staple"


# setup ------------------------------------------------------------------------------------
def register(auth_url: str, names: list[str], workers: int = 8) -> dict[str, dict[str, str]]:
    """Register and log in each name; {name: {"id", "token"}}."""

    def one(name: str) -> tuple[str, dict[str, str]]:
        with httpx.Client(timeout=60) as http:
            r = http.post(
                auth_url + "/api/auth/register", json={"username": name, "password": PASSWORD}
            )
            if r.status_code != 201:
                raise RuntimeError(f"register {name}: {r.status_code} {r.text}")
            uid = r.json()["id"]
            r = http.post(
                auth_url + "/api/auth/login", json={"username": name, "password": PASSWORD}
            )
            if r.status_code != 200:
                raise RuntimeError(f"login {name}: {r.status_code} {r.text}")
            return name, {"id": uid, "token": r.json()["access_token"]}

    with ThreadPoolExecutor(workers) as pool:
        return dict(pool.map(one, names))


def direct_room(auth_url: str, token: str, other: str) -> str:
    with httpx.Client(timeout=60) as http:
        r = http.post(
            auth_url + "/api/rooms/direct",
            json={"username": other},
            headers={"Authorization": f"Bearer {token}"},
        )
        r.raise_for_status()
        return str(r.json()["id"])


def group_room(auth_url: str, token: str, name: str, members: list[str]) -> str:
    with httpx.Client(timeout=60) as http:
        r = http.post(
            auth_url + "/api/rooms",
            json={"name": name, "members": members},
            headers={"Authorization": f"Bearer {token}"},
        )
        if r.status_code != 201:
            raise RuntimeError(f"group room: {r.status_code} {r.text}")
        return str(r.json()["id"])


async def _history_depth(url: str) -> int:
    """Messages waiting in every history shard (chat.history.0, .1, ... while they exist)."""
    import aio_pika

    from services.common import topology

    conn = await aio_pika.connect(url)
    total = 0
    try:
        for k in range(1024):
            ch = await conn.channel()
            try:
                q = await ch.declare_queue(topology.history_queue(k), passive=True)
            except aio_pika.exceptions.ChannelClosed:
                break  # no such shard: that was the last
            total += int(q.declaration_result.message_count or 0)
            await ch.close()
        return total
    finally:
        await conn.close()


def wait_history_drained(url: str, timeout: float) -> dict[str, Any]:
    """Wait until the history shards are empty: no scenario starts on another's backlog."""
    t0 = time.monotonic()
    depth0 = depth = asyncio.run(_history_depth(url))
    while depth > 0 and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
        depth = asyncio.run(_history_depth(url))
    return {"backlog_at_end": depth0, "drain_s": round(time.monotonic() - t0, 2), "left": depth}


def scrape(url: str, name: str) -> dict[str, float]:
    """Prometheus samples of one metric family: {'<suffix>{labels}': value}."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith(name):
            key, _, value = line.rpartition(" ")
            out[key[len(name) :]] = float(value)
    return out


def histogram_quantiles(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """p50/p99 (upper bucket bound) of a Prometheus histogram between two scrapes."""
    buckets = []
    for key, v in after.items():
        m = re.match(r'_bucket\{le="([^"]+)"\}', key)
        if m:
            le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
            buckets.append((le, v - before.get(key, 0.0)))
    buckets.sort()
    total = buckets[-1][1] if buckets else 0
    out: dict[str, Any] = {"count": int(total)}
    for name, q in (("p50_le_s", 0.5), ("p99_le_s", 0.99)):
        out[name] = next((le for le, c in buckets if total and c >= q * total), None)
    return out


class Bench:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.cluster: Cluster | None = None
        self.vhost = ""
        self.db = ""
        self.users: dict[str, dict[str, str]] = {}
        self.result: dict[str, Any] = {}
        self.state = Path(tempfile.mkdtemp(prefix="bench-cluster-"))

    # infrastructure --------------------------------------------------------------------
    def start(self) -> None:
        nofile = raise_nofile(65536)  # inherited by the gateways started below
        self.vhost = create_vhost("bench")
        self.db = create_database("bench")
        env = {
            "CHAT_LOG_LEVEL": "WARNING",
            "CHAT_SEND_RATE": "1000000",
            "CHAT_SEND_BURST": "1000000",
            "CHAT_ACCESS_TTL": "7200",
            "CHAT_REGISTER_PER_IP_HOUR": "1000000",  # the benchmark's users all come from here
        }
        env.update(self.spec.get("env", {}))
        self.cluster = Cluster(
            database_url=mysql_url(self.db),
            broker_url=amqp_url(self.vhost),
            gateways=3,
            port=None,
            state=self.state,
            extra_env=env,
        )
        t0 = time.monotonic()
        try:
            self.cluster.start()
        except Exception:
            for f in sorted((self.state / "logs").glob("*.log")):
                log(f"--- {f.name}\n{f.read_text(errors='replace')[-2500:]}")
            raise
        self.result["cluster"] = {
            "gateways": 3,
            "start_s": round(time.monotonic() - t0, 1),
            "nofile_limit": nofile,
            "env": env,
        }

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.db:
            drop_database(self.db)
        if self.vhost:
            delete_vhost(self.vhost)
        shutil.rmtree(self.state, ignore_errors=True)

    @property
    def c(self) -> Cluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def gw_urls(self) -> list[str]:
        return [g.url for g in self.c.gateway_procs]

    def gw_pid(self, i: int) -> int:
        p = self.c.gateway_procs[i].popen
        assert p is not None
        return p.pid

    def groups(self, gateways: int = 3) -> dict[str, list[int]]:
        auth = self.c.auth.popen
        hist = self.c.history.popen
        assert auth is not None and hist is not None
        g: dict[str, list[int]] = {f"gateway{i + 1}": [self.gw_pid(i)] for i in range(gateways)}
        g["history"] = [hist.pid]
        g["auth"] = [auth.pid, *children(auth.pid)]
        g["rabbitmq"] = find_pids(["beam.smp"])
        g["mysql"] = find_pids(["mariadbd", "mysqld"])
        return g

    def loadgen(self, spec: dict[str, Any], timeout: float = 600) -> dict[str, Any]:
        return run_json([PYTHON, "-m", "bench.loadgen", json.dumps(spec)], timeout)

    def drained(self) -> dict[str, Any]:
        return wait_history_drained(
            amqp_url(self.vhost), float(self.spec.get("history_drain_timeout", 120))
        )

    # setup ------------------------------------------------------------------------------
    def setup_users(self) -> None:
        s = self.spec
        n_pairs, n_fan, n_idle = int(s["pairs"]), int(s["fanout_members"]), int(s["idle_users"])
        names = [f"s{i}" for i in range(n_pairs)] + [f"r{i}" for i in range(n_pairs)]
        names += [f"f{i}" for i in range(n_fan)] + [f"idle{i}" for i in range(n_idle)]
        names = [f"b{os.urandom(3).hex()}{n}" for n in names]
        t0 = time.monotonic()
        self.users = register(self.c.auth.url, names)
        self.result["setup"] = {
            "users": len(names),
            "register_and_login_s": round(time.monotonic() - t0, 1),
        }
        self.senders = names[:n_pairs]
        self.receivers = names[n_pairs : 2 * n_pairs]
        self.fan = names[2 * n_pairs : 2 * n_pairs + n_fan]
        self.idle_users = names[2 * n_pairs + n_fan :]
        auth = self.c.auth.url
        self.rooms = [
            direct_room(auth, self.users[a]["token"], b)
            for a, b in zip(self.senders, self.receivers, strict=True)
        ]
        self.group = group_room(
            auth, self.users[self.fan[0]]["token"], "bench-fanout", self.fan[1:]
        )

    def pairs(self, gateways: int) -> list[dict[str, Any]]:
        """Sender on gateway i, receiver on gateway i+1 (the same one when there is one)."""
        urls = self.gw_urls[:gateways]
        out = []
        for i, (a, b) in enumerate(zip(self.senders, self.receivers, strict=True)):
            out.append(
                {
                    "send_url": urls[i % gateways],
                    "recv_url": urls[(i + 1) % gateways],
                    "send_auth": self.users[a]["token"],
                    "recv_auth": self.users[b]["token"],
                    "target": self.rooms[i],
                }
            )
        return out

    def pair_spec(self, gateways: int, **more: Any) -> dict[str, Any]:
        spec = {
            "scenario": "pairs",
            "protocol": "chat",
            "pairs": self.pairs(gateways),
            "window": self.spec["window"],
            "warmup": self.spec["warmup"],
            "drain_timeout": self.spec.get("drain_timeout", 10),
        }
        spec.update(more)
        return spec

    # scenarios --------------------------------------------------------------------------
    def throughput(self) -> None:
        """(1) max sustained cross-gateway DM throughput with 1, 2, 3 gateways."""
        out = []
        for g in self.spec["gateways"]:
            log(f"scaled: throughput, {g} gateway(s), closed loop")
            meter = CpuMeter(self.groups(3))
            meter.start()
            closed = self.loadgen(
                self.pair_spec(g, mode="closed", duration=self.spec["throughput_s"])
            )
            closed["cpu"] = meter.stop()
            closed["history_after"] = self.drained()

            def verify(rate: float, g: int = g) -> dict[str, Any]:
                log(f"scaled: throughput, {g} gateway(s), open loop at {rate:.0f} msg/s (verify)")
                meter = CpuMeter(self.groups(3))
                meter.start()
                v = self.loadgen(
                    self.pair_spec(g, mode="rate", rate=rate, duration=self.spec["verify_s"])
                )
                v["cpu"] = meter.stop()
                v["history_after"] = self.drained()
                return v

            found = find_sustained(closed["delivered_rate"], verify, self._fractions())
            out.append({"gateways": g, "closed_loop": closed, **found})
        self.result["throughput"] = out

    def _fractions(self) -> tuple[float, ...]:
        return tuple(self.spec.get("verify_fractions", VERIFY_FRACTIONS))

    def latency(self) -> None:
        """(2) latency p50/p99/p99.9 at fixed rates, senders and receivers on different gateways;
        (5) the history writer's lag and write rate at each rate, from the rows it wrote."""
        out = []
        for rate in self.spec["rates"]:
            log(f"scaled: latency at {rate} msg/s over 3 gateways")
            before = scrape(self.c.history.url, "chat_history_write_lag_seconds")
            meter = CpuMeter(self.groups(3))
            meter.start()
            r = self.loadgen(
                self.pair_spec(3, mode="rate", rate=rate, duration=self.spec["latency_s"])
            )
            r["cpu"] = meter.stop()
            r["history_after"] = self.drained()
            after = scrape(self.c.history.url, "chat_history_write_lag_seconds")
            r["history"] = self.history_rows(r["tag"])
            r["history"]["metric"] = histogram_quantiles(before, after)
            out.append(r)
        self.result["latency"] = out

    def history_rows(self, tag: str) -> dict[str, Any]:
        rows = mysql_rows(
            self.db,
            "SELECT sent_ms, written_ms FROM messages WHERE client_msg_id LIKE %s",
            (tag + "%",),
        )
        if not rows:
            return {"rows": 0}
        lags = [(w - s) / 1000 for s, w in rows]
        first = min(w for _, w in rows)
        last = max(w for _, w in rows)
        return {
            "rows": len(rows),
            "write_lag_ms": summary_ms(lags),
            "write_rate": round(len(rows) / max(0.001, (last - first) / 1000), 1),
        }

    def fanout(self) -> None:
        """(3) one member sends to a group of N members spread over 3 gateways."""
        log(f"scaled: fan-out to a group of {len(self.fan)}")
        urls = self.gw_urls
        members = [
            {"url": urls[i % 3], "auth": self.users[n]["token"]} for i, n in enumerate(self.fan)
        ]
        meter = CpuMeter(self.groups(3))
        meter.start()
        r = self.loadgen(
            {
                "scenario": "fanout",
                "members": members,
                "room": self.group,
                "messages": self.spec["fanout_messages"],
                "rate": self.spec["fanout_rate"],
            }
        )
        r["cpu"] = meter.stop()
        r["history_after"] = self.drained()
        self.result["fanout"] = r

    def idle(self) -> None:
        """(4) idle sockets on ONE gateway process, memory per socket from its RSS."""
        log(f"scaled: idle sockets {self.spec['idle_steps']} on one gateway")
        pid = self.gw_pid(2)
        r = self.loadgen(
            {
                "scenario": "idle",
                "url": self.gw_urls[2],
                "pid": pid,
                "tokens": [self.users[n]["token"] for n in self.idle_users],
                "steps": self.spec["idle_steps"],
                "concurrency": self.spec.get("idle_concurrency", 100),
                "settle": self.spec.get("idle_settle", 2),
                "timeout": 900,
            },
            timeout=900,
        )
        r["gateway_alive_after"] = self.c.gateway_procs[2].alive()
        self.result["idle"] = r
        steps = self.spec.get("idle_deflate_steps")
        if steps:  # browsers negotiate permessage-deflate: a zlib context per socket
            log(f"scaled: idle sockets {steps} with permessage-deflate on another gateway")
            r = self.loadgen(
                {
                    "scenario": "idle",
                    "url": self.gw_urls[1],
                    "pid": self.gw_pid(1),
                    "tokens": [self.users[n]["token"] for n in self.idle_users],
                    "steps": steps,
                    "concurrency": self.spec.get("idle_concurrency", 100),
                    "settle": self.spec.get("idle_settle", 2),
                    "compression": "deflate",
                    "timeout": 600,
                },
                timeout=600,
            )
            self.result["idle_deflate"] = r

    def login(self) -> None:
        """(6) login rate against gunicorn auth; argon2 bound by design."""
        log("scaled: login rate")
        meter = CpuMeter({"auth": self.groups()["auth"]})
        meter.start()
        r = self.loadgen(
            {
                "scenario": "login",
                "url": self.c.auth.url,
                "users": self.senders + self.receivers,
                "password": PASSWORD,
                "duration": self.spec["login_s"],
                "concurrency": self.spec.get("login_concurrency", 8),
            }
        )
        r["cpu"] = meter.stop()
        r["argon2"] = argon2_baseline(self.result["cluster"]["env"])
        self.result["login"] = r

    def profile(self) -> None:
        """py-spy on gateway 1 under the 1-gateway closed-loop load (when py-spy is there):
        native stacks (syscalls, the GC and C code show) for the summary, Python-only stacks for
        the flame graph. py-spy is not a dependency: `.venv/bin/pip install py-spy` to enable."""
        pyspy = shutil.which("py-spy") or str(ROOT / ".venv" / "bin" / "py-spy")
        secs = int(self.spec.get("profile_s", 0))
        if not secs or not os.path.exists(pyspy):
            self.result["profile"] = {"skipped": "py-spy not installed" if secs else "disabled"}
            return
        log(f"scaled: py-spy on gateway 1 for 2 x {secs}s under closed-loop load")
        out_dir = Path(self.spec["out_dir"])
        pid = self.gw_pid(0)
        spec = self.pair_spec(1, mode="closed", duration=2 * secs + 6)
        gen = subprocess.Popen(
            [PYTHON, "-m", "bench.loadgen", json.dumps(spec)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        raw = out_dir / "profile-gateway.txt"
        svg = out_dir / "profile-gateway.svg"
        hist_raw = out_dir / "profile-history.txt"
        hist_proc = self.c.history.popen
        assert hist_proc is not None
        hist_pid = hist_proc.pid
        hist_cpu = 0.0
        try:
            time.sleep(3)
            c0, t0 = cpu_seconds(pid), time.monotonic()
            hc0 = cpu_seconds(hist_pid)
            # the history writer at the same time (it consumes every message too)
            hist_argv = [pyspy, "record", "-d", str(secs), "-p", str(hist_pid), "-r", "100"]
            hist = subprocess.Popen(
                [*hist_argv, "--native", "-f", "raw", "-o", str(hist_raw)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for extra, target in ((["--native", "-f", "raw"], raw), ([], svg)):
                argv = [pyspy, "record", "-d", str(secs), "-p", str(pid), "-r", "100"]
                subprocess.run(
                    [*argv, *extra, "-o", str(target)],
                    capture_output=True,
                    timeout=secs + 60,
                    check=False,
                )
                if target == raw:
                    hist.wait(60)
                    hist_cpu = (cpu_seconds(hist_pid) - hc0) / max(1e-6, time.monotonic() - t0)
            cpu = (cpu_seconds(pid) - c0) / max(1e-6, time.monotonic() - t0)
        finally:
            stdout, _ = gen.communicate(timeout=180)
        load = json.loads(stdout.decode().strip().splitlines()[-1])
        from bench.profile import summarise

        self.result["profile"] = {
            "seconds": secs,
            "load_delivered_rate": load["delivered_rate"],
            "gateway_cpu_pct_of_one_core": round(100 * cpu, 1),
            "svg": svg.name,
            "raw": raw.name,
            **summarise(raw),
            "history": {
                "raw": hist_raw.name,
                "cpu_pct_of_one_core": round(100 * hist_cpu, 1),
                **summarise(hist_raw, loop_markers=()),  # its DB writes run in a thread
            },
        }

    def run(self) -> dict[str, Any]:
        steps = self.spec.get(
            "steps", ["throughput", "latency", "fanout", "profile", "login", "idle"]
        )
        try:
            self.start()
            log("scaled: registering users")
            self.setup_users()
            for name in steps:
                t0 = time.monotonic()
                getattr(self, name)()
                self.result.setdefault("timings_s", {})[name] = round(time.monotonic() - t0, 1)
        finally:
            self.stop()
        return self.result


def argon2_baseline(env: dict[str, str]) -> dict[str, Any]:
    """One password hash with the auth service's parameters, in this process: the bound."""
    from argon2 import PasswordHasher

    from services.common.settings import load_settings

    # a secret only so that the settings load without generating one under var/
    s = load_settings({"CHAT_JWT_SECRET": "argon2-baseline-" + "x" * 32, **os.environ, **env})
    ph = PasswordHasher(
        time_cost=s.argon2_time_cost,
        memory_cost=s.argon2_memory_kib,
        parallelism=s.argon2_parallelism,
    )
    h = ph.hash(PASSWORD)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 1.0:
        ph.verify(h, PASSWORD)
        n += 1
    per = (time.perf_counter() - t0) / n
    cores = os.cpu_count() or 1
    return {
        "time_cost": s.argon2_time_cost,
        "memory_kib": s.argon2_memory_kib,
        "parallelism": s.argon2_parallelism,
        "verify_ms": round(per * 1000, 1),
        "bound_logins_per_s": round(cores / per, 1),
    }


def main() -> None:
    spec = json.loads(sys.argv[1])
    result = Bench(spec).run()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
