"""``make bench`` / ``make bench-smoke``: every benchmark in one run, then the report.

    python -m bench.run                 # full: writes docs/benchmarks/results.{json,md} + PNGs
    python -m bench.run --smoke --out /tmp/x    # tiny sizes, a minute at most

Each part runs in its own process (and starts its own servers and load-generator processes):
ceilings (bench/ceiling.py), the python-socketio peer (bench/peer.py), the scaled-mode scenarios
(bench/scaled.py), the history writer's own benchmark (bench/history_writer.py) and search
(bench/search.py).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import PYTHON, ROOT, log, machine, now_iso, run_json, source_state

FULL: dict[str, Any] = {
    "ceiling": {
        "messages": 15000,
        "relay": {
            "pairs": 24,
            "window": 8,
            "duration": 6,
            "warmup": 1,
            "rates": [250, 500, 1000, 2000],  # the bare relay through RabbitMQ only
            "latency_s": 8,
        },
    },
    "peer": {
        "servers": [1, 3],
        "pairs": 24,
        "window": 8,
        "duration": 6,
        "verify_s": 5,
        "warmup": 1,
        "rates": [250],
    },
    "scaled": {
        "pairs": 24,
        "window": 8,
        "warmup": 1,
        "gateways": [1, 2, 3],
        "throughput_s": 8,
        "verify_s": 6,
        "rates": [250, 500, 1000, 2000],
        "latency_s": 8,
        "fanout_members": 100,
        "fanout_messages": 200,
        "fanout_rate": 20,
        "idle_users": 10,
        "idle_steps": [1000, 5000, 10000],
        "idle_deflate_steps": [1000, 2000],
        "login_s": 6,
        "profile_s": 8,
    },
    "history_writer": ["--messages", "10000"],
    "bigroom": {
        "members": 10000,
        "online": 1000,
        "joins": 20,
        "fanout_messages": 30,
        "fanout_rate": 2,
        "connect_rooms": 2000,
        "settle": 2,
    },
    "membus": {"bindings": [20, 20000], "messages": 50000},
    "history_scale": {"messages": 20000, "shards": [1, 2, 4], "rooms": 64},
    # a fifth of bench/search.py's default size (~4 min here); the million-message figure is
    # docs/benchmarks/search.md's (python -m bench.search, ~15 min)
    "search": ["--messages", "200000", "--rooms", "2000", "--users", "1000", "--queries", "200"],
}

SMOKE: dict[str, Any] = {
    "ceiling": {
        "messages": 300,
        "relay": {
            "pairs": 3,
            "window": 4,
            "duration": 1,
            "warmup": 0.2,
            "settle": 0.2,
            "rates": [100],
            "latency_s": 1,
        },
    },
    "peer": {
        "servers": [1],
        "pairs": 3,
        "window": 4,
        "duration": 1,
        "verify_s": 1,
        "verify_fractions": [0.5],
        "warmup": 0.2,
        "settle": 0.5,
    },
    "scaled": {
        "pairs": 3,
        "window": 4,
        "warmup": 0.2,
        "gateways": [2],  # the 3-gateway paths run in the latency and fan-out parts
        "throughput_s": 1,
        "verify_s": 0.7,
        "verify_fractions": [0.5],
        "rates": [100],
        "latency_s": 1,
        "fanout_members": 6,
        "fanout_messages": 5,
        "fanout_rate": 10,
        "idle_users": 2,
        "idle_steps": [20, 50],
        "idle_deflate_steps": [20],
        "idle_settle": 0.3,
        "login_s": 1,
        "login_concurrency": 2,
        "profile_s": 0,
        "env": {"CHAT_ARGON2_TIME_COST": "1", "CHAT_ARGON2_MEMORY_KIB": "8192"},
    },
    "history_writer": ["--messages", "200", "--rates", "200", "--paced-s", "1"],
    "bigroom": {
        "members": 150,
        "online": 20,
        "joins": 2,
        "fanout_messages": 3,
        "fanout_rate": 10,
        "connect_rooms": 30,
        "settle": 0.5,
    },
    "membus": {"bindings": [20, 2000], "messages": 2000},
    "history_scale": {"messages": 300, "shards": [1, 2], "rooms": 8},
    "search": ["--messages", "20000", "--rooms", "200", "--users", "50", "--queries", "40"],
}


def history_writer(args: list[str]) -> dict[str, Any]:
    """bench/history_writer.py (owned by the history helper): run it, parse its summary lines."""
    t0 = time.monotonic()
    proc = subprocess.run(
        [PYTHON, str(ROOT / "bench" / "history_writer.py"), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out: dict[str, Any] = {"args": args, "elapsed_s": round(time.monotonic() - t0, 1)}
    text = proc.stdout
    out["output"] = text.strip().splitlines()[-6:]
    if proc.returncode != 0:
        out["error"] = f"exit {proc.returncode}: {proc.stderr[-1500:]}"
        return out
    m = re.search(
        r"live: writer sustained (\d+) msg/s; write lag ms p50=(\d+) p90=(\d+) p99=(\d+) max=(\d+)",
        text,
    )
    if m:
        out["live_rate"] = int(m.group(1))
        out["live_lag_ms"] = {
            k: int(m.group(i + 2)) for i, k in enumerate(("p50", "p90", "p99", "max"))
        }
    m = re.search(r"live: published (\d+) confirmed in [\d.]+s \((\d+)/s\)", text)
    if m:
        out["live_publish_rate"] = int(m.group(2))
    for m in re.finditer(
        r"paced (\d+)/s: (\d+) published in [\d.]+s; write lag ms p50=(\d+) p90=(\d+) p99=(\d+) "
        r"max=(\d+); writer CPU ([\d.]+) ms/msg",
        text,
    ):
        out.setdefault("paced", []).append(
            {
                "rate": int(m.group(1)),
                "messages": int(m.group(2)),
                "lag_ms": {
                    k: int(m.group(i + 3)) for i, k in enumerate(("p50", "p90", "p99", "max"))
                },
                "writer_cpu_ms_per_msg": float(m.group(7)),
            }
        )
    m = re.search(r"backlog: writer drained at (\d+) msg/s", text)
    if m:
        out["backlog_drain_rate"] = int(m.group(1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (for make test)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated parts: ceiling,peer,scaled,history,bigroom,membus,history_scale,"
        "search,ceiling_end",
    )
    args = ap.parse_args()
    cfg = SMOKE if args.smoke else FULL
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = {p for p in args.only.split(",") if p}
    t0 = time.monotonic()
    results: dict[str, Any] = {
        "kind": "smoke" if args.smoke else "full",
        "date": now_iso(),
        "command": "make bench-smoke" if args.smoke else "make bench",
        "argv": " ".join(sys.argv),
        "machine": machine(),
        "source": source_state(),
        "config": cfg,
        "errors": {},
    }
    parts = [
        (
            "ceiling",
            lambda: run_json([PYTHON, "-m", "bench.ceiling", json.dumps(cfg["ceiling"])], 600),
        ),
        ("peer", lambda: run_json([PYTHON, "-m", "bench.peer", json.dumps(cfg["peer"])], 600)),
        (
            "scaled",
            lambda: run_json(
                [PYTHON, "-m", "bench.scaled", json.dumps(dict(cfg["scaled"], out_dir=str(out)))],
                1500,
            ),
        ),
        ("history", lambda: history_writer(cfg["history_writer"])),
        (
            "bigroom",  # issue 13: a group of thousands with many members online
            lambda: run_json([PYTHON, "-m", "bench.bigroom", json.dumps(cfg["bigroom"])], 900),
        ),
        (
            "membus",  # issue 13: the in-process bus with few and many bindings
            lambda: run_json([PYTHON, "-m", "bench.membus", json.dumps(cfg["membus"])], 300),
        ),
        (
            "history_scale",  # issue 14: backlog drain with 1, 2, 4 shards and writers
            lambda: run_json(
                [PYTHON, "-m", "bench.history_scale", json.dumps(cfg["history_scale"])], 1200
            ),
        ),
        (
            "search",  # issue 17: search latency on a million messages
            lambda: run_json([PYTHON, "-m", "bench.search", "--json", *cfg["search"]], 3600),
        ),
        (
            "ceiling_end",  # the baseline again: how much the machine drifted during the run
            lambda: run_json(
                [
                    PYTHON,
                    "-m",
                    "bench.ceiling",
                    json.dumps({"messages": cfg["ceiling"]["messages"], "only_baseline": True}),
                ],
                300,
            ),
        ),
    ]
    for name, fn in parts:
        if only and name not in only:
            continue
        log(f"=== {name}")
        t = time.monotonic()
        try:
            results[name] = fn()
        except Exception as exc:  # one broken part must not lose the others' figures
            log(f"{name} failed: {exc}")
            results["errors"][name] = str(exc)[-3000:]
        results.setdefault("timings_s", {})[name] = round(time.monotonic() - t, 1)
    results["total_s"] = round(time.monotonic() - t0, 1)
    from bench.report import write_report

    try:
        write_report(results, out)  # adds results["targets"]
    finally:
        (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    log(f"done in {results['total_s']}s: {out / 'results.md'}")
    if results["errors"]:
        log(f"errors in: {', '.join(results['errors'])}")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
