"""The peer: the chat scenario on python-socketio + ``AsyncAioPikaManager`` (bench/peer_app.py),
on the same RabbitMQ (own vhost), with the same number of server processes (uvicorn, same
server stack as the gateway) and the same clients (bench/loadgen.py, same pairs, same window).

    python -m bench.peer '{"servers": [1, 3], "pairs": 12, "window": 16, "duration": 6}'
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from bench.ceiling import uvicorn_argv
from bench.common import (
    PYTHON,
    ROOT,
    CpuMeter,
    amqp_url,
    create_vhost,
    delete_vhost,
    find_pids,
    free_port,
    log,
    run_json,
    stop_proc,
    wait_http,
)
from bench.loadgen import VERIFY_FRACTIONS, find_sustained


def pairs_over(urls: list[str], n: int) -> list[dict[str, Any]]:
    """Sender on server i, receiver on server i+1 (the same server when there is one)."""
    out = []
    for i in range(n):
        s, r = urls[i % len(urls)], urls[(i + 1) % len(urls)]
        out.append(
            {
                "send_url": s,
                "recv_url": r,
                "send_auth": f"dm{i}",
                "recv_auth": f"dm{i}",
                "target": f"dm{i}",
            }
        )
    return out


def run_servers(count: int, spec: dict[str, Any]) -> dict[str, Any]:
    vhost = create_vhost("bench_peer")
    env = dict(os.environ, BENCH_AMQP_URL=amqp_url(vhost))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        urls = []
        for _ in range(count):
            port = free_port()
            procs.append(
                subprocess.Popen(uvicorn_argv("bench.peer_app:app", port), cwd=ROOT, env=env)
            )
            urls.append(f"http://127.0.0.1:{port}")
        for p, u in zip(procs, urls, strict=True):
            wait_http(u + "/healthz", 30, p)
        out: dict[str, Any] = {"servers": count}
        groups = {
            "servers": [p.pid for p in procs],
            "rabbitmq": find_pids(["beam.smp"]),
        }
        base = {
            "scenario": "pairs",
            "protocol": "socketio",
            "pairs": pairs_over(urls, int(spec.get("pairs", 12))),
        }
        for key in ("window", "duration", "warmup", "body_bytes", "drain_timeout"):
            if key in spec:
                base[key] = spec[key]
        log(f"peer: python-socketio, {count} server(s), closed loop")
        meter = CpuMeter(groups)
        meter.start()
        run = dict(base, mode="closed")
        out["throughput"] = run_json([PYTHON, "-m", "bench.loadgen", json.dumps(run)], 300)
        out["throughput"]["cpu"] = meter.stop()

        def verify(rate: float) -> dict[str, Any]:
            log(f"peer: python-socketio, {count} server(s), open loop at {rate:.0f} msg/s (verify)")
            run = dict(base, mode="rate", rate=rate, duration=spec.get("verify_s", 5))
            return run_json([PYTHON, "-m", "bench.loadgen", json.dumps(run)], 300)

        fractions = tuple(spec.get("verify_fractions", VERIFY_FRACTIONS))
        out.update(find_sustained(out["throughput"]["delivered_rate"], verify, fractions))
        for rate in spec.get("rates", []):
            log(f"peer: python-socketio, {count} server(s), {rate} msg/s")
            run = dict(base, mode="rate", rate=rate)
            out.setdefault("latency", []).append(
                run_json([PYTHON, "-m", "bench.loadgen", json.dumps(run)], 300)
            )
        return out
    finally:
        for p in procs:
            stop_proc(p)
        delete_vhost(vhost)


def main() -> None:
    spec: dict[str, Any] = json.loads(sys.argv[1]) if len(sys.argv) > 1 else {}
    results = [run_servers(int(n), spec) for n in spec.get("servers", [1, 3])]
    print(json.dumps({"runs": results}), flush=True)


if __name__ == "__main__":
    main()
