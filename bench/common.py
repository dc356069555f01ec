"""Shared helpers of the benchmark harness: the machine, percentiles, process accounting
(CPU and RSS from /proc), file-descriptor limits, own RabbitMQ vhosts and MySQL databases."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import resource
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from tools import scratch
from tools.cluster import free_port, wait_http  # noqa: F401 (re-exported to bench/)

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
RABBIT = os.environ.get("BENCH_RABBITMQ", "127.0.0.1:5672")
MYSQL_HOST = os.environ.get("BENCH_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("BENCH_MYSQL_PORT", "3306"))
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


# the machine -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    except OSError:
        pass
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = []
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "ram_gib": round(mem_kib / 1024 / 1024, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "hostname": socket.gethostname(),
        "loadavg_at_start": load,
    }


def source_state() -> dict[str, Any]:
    """Which code was measured: the commit and the files changed since (read-only git)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [ln[3:] for ln in git("status", "--porcelain", "services").splitlines()]
    return {"commit": git("rev-parse", "--short", "HEAD"), "services_changed": dirty}


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# statistics --------------------------------------------------------------------------------
def pct(sorted_values: Sequence[float], p: float) -> float | None:
    """The p-th percentile (0..100) of already sorted values, nearest rank."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(p / 100 * len(sorted_values)) - 1))
    return float(sorted_values[k])


def summary_ms(values_s: Iterable[float]) -> dict[str, Any]:
    """p50/p90/p99/p99.9/max in milliseconds of durations given in seconds."""
    v = sorted(values_s)
    out: dict[str, Any] = {"n": len(v)}
    for name, p in (("p50", 50), ("p90", 90), ("p99", 99), ("p999", 99.9)):
        x = pct(v, p)
        out[name] = None if x is None else round(x * 1000, 2)
    out["max"] = round(v[-1] * 1000, 2) if v else None
    return out


# processes ---------------------------------------------------------------------------------
def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its reaped children, in seconds (0 if gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # after the comm field: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid: int) -> list[int]:
    """Direct and indirect children of a process (gunicorn workers, uvicorn reloaders)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        for k in kids:
            out.append(int(k))
            todo.append(int(k))
    return out


def find_pids(names: Sequence[str]) -> list[int]:
    """The pid of the biggest (by RSS) process whose command name is one of ``names``: the
    shared broker or database server, not a short-lived ``rabbitmqctl`` VM (read-only
    accounting: they are never signalled)."""
    found = _all_pids(names)
    return [max(found, key=rss_kib)] if found else []


def _all_pids(names: Sequence[str]) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            comm = (d / "comm").read_text().strip()
        except OSError:
            continue
        if comm in names:
            out.append(int(d.name))
    return out


def machine_cpu() -> tuple[float, float, float]:
    """(busy jiffies of all CPUs, all jiffies, CPU pressure 'some' total in µs) right now."""
    busy = total = 0.0
    try:
        f = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        busy, total = f[0] + f[1] + f[2] + f[5] + f[6] + f[7], sum(f)
    except (OSError, ValueError, IndexError):
        pass
    psi = 0.0
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                psi = float(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        pass
    return busy, total, psi


class CpuMeter:
    """CPU seconds used by named groups of processes between start() and stop(), and the
    whole machine's load meanwhile: how busy all its CPUs were (every tenant included) and the
    CPU pressure (share of the time some runnable task waited for a CPU: /proc/pressure/cpu)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = {k: list(v) for k, v in groups.items() if v}
        self.t0 = 0.0
        self.before: dict[str, float] = {}
        self.m0 = (0.0, 0.0, 0.0)

    def _read(self) -> dict[str, float]:
        return {k: sum(cpu_seconds(p) for p in pids) for k, pids in self.groups.items()}

    def start(self) -> None:
        self.before = self._read()
        self.m0 = machine_cpu()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, Any]:
        after = self._read()
        m1 = machine_cpu()
        wall = max(1e-6, time.monotonic() - self.t0)
        d_total = max(1e-6, m1[1] - self.m0[1])
        return {
            "machine_busy_pct": round(100 * (m1[0] - self.m0[0]) / d_total, 1),
            "cpu_pressure_pct": round(100 * (m1[2] - self.m0[2]) / 1e6 / wall, 1),
            "wall_s": round(wall, 2),
            "cpu_s": {k: round(max(0.0, after[k] - self.before.get(k, 0.0)), 2) for k in after},
            "cpu_pct_of_one_core": {
                k: round(100 * max(0.0, after[k] - self.before.get(k, 0.0)) / wall, 1)
                for k in after
            },
        }


def raise_nofile(want: int = 65536) -> int:
    """Raise RLIMIT_NOFILE (soft and, as root, hard) for this process and its children."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, want), max(hard, want)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def stop_proc(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


# own vhost and database --------------------------------------------------------------------
def rabbitmqctl() -> str:
    ctl = scratch.rabbitmqctl()
    if ctl is None:
        raise SystemExit("rabbitmqctl not found: the benchmarks need a local RabbitMQ")
    return ctl


def create_vhost(prefix: str = "bench") -> str:
    rabbitmqctl()
    return scratch.create_vhost(prefix)


delete_vhost = scratch.delete_vhost


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{RABBIT}/{vhost}"


def _mysql() -> Any:
    import pymysql

    return pymysql.connect(host=MYSQL_HOST, port=MYSQL_PORT, user="root", autocommit=True)


def create_database(prefix: str = "bench") -> str:
    return scratch.create_database(prefix, host=MYSQL_HOST, port=MYSQL_PORT)


def drop_database(name: str) -> None:
    scratch.drop_database(name, host=MYSQL_HOST, port=MYSQL_PORT)


def mysql_url(name: str) -> str:
    return f"mysql://root@{MYSQL_HOST}:{MYSQL_PORT}/{name}"


def mysql_rows(name: str, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    conn = _mysql()
    try:
        with conn.cursor() as cur:
            cur.execute(f"USE `{name}`")
            cur.execute(sql, args)
            return list(cur.fetchall())
    finally:
        conn.close()


# sub-processes that answer with JSON -------------------------------------------------------
def run_json(argv: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a harness process; its last stdout line is a JSON object. Its stderr (progress) is
    passed through, and its tail kept for the error message."""
    import collections
    import threading

    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    tail: collections.deque[str] = collections.deque(maxlen=60)

    def pump() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            tail.append(line)
            if line.startswith("[bench"):
                sys.stderr.write(line)
                sys.stderr.flush()

    t = threading.Thread(target=pump, daemon=True)
    t.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    try:
        assert proc.stdout is not None
        stdout = proc.stdout.read()
        proc.wait()
    finally:
        timed_out = not killer.is_alive()
        killer.cancel()
    t.join(5)
    if timed_out and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} timed out after {timeout}s")
    err = "".join(tail)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed ({proc.returncode}): {err[-3000:]}")
    lines = [ln for ln in stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise RuntimeError(f"{' '.join(argv[:4])} printed no JSON: {err[-2000:]}")
    return dict(json.loads(lines[-1]))


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)
