"""`make bench-smoke` in `make test`: the benchmark harness runs end to end with tiny sizes (real
RabbitMQ, MariaDB, gunicorn/uvicorn processes, load-generator processes) and its JSON holds
every figure, so the harness cannot rot. Benchmarks never gate on speed: only on completeness.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import services as svc
from tools import scratch
from tools.cluster import ROOT

pytestmark = [pytest.mark.scaled, pytest.mark.timeout(420)]


def _require_services() -> None:
    """Skip loudly without the real services; under CI=true, fail instead (never skip)."""
    if not svc.port_open(svc.RABBIT_HOST, svc.RABBIT_PORT):
        svc.missing(f"RabbitMQ is not reachable at {svc.RABBIT_HOST}:{svc.RABBIT_PORT}")
    if scratch.rabbitmqctl() is None:
        svc.missing("rabbitmqctl is not installed (the benchmarks create their own vhosts)")
    if not svc.port_open(svc.MYSQL_HOST, svc.MYSQL_PORT):
        svc.missing(f"MySQL/MariaDB is not reachable at {svc.MYSQL_HOST}:{svc.MYSQL_PORT}")


def test_bench_smoke(tmp_path: Path) -> None:
    _require_services()
    make = shutil.which("make")
    assert make, "make is required"
    proc = subprocess.run(
        [make, "-s", "bench-smoke", f"BENCH_OUT={tmp_path}"],
        cwd=ROOT,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert proc.returncode == 0, (
        f"bench-smoke failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    )
    r = json.loads((tmp_path / "results.json").read_text())
    assert r["kind"] == "smoke" and not r["errors"], r["errors"]
    assert r["machine"]["cores"] >= 1 and r["machine"]["cpu"]

    # ceilings: every AMQP variant and the relay measured, every message delivered
    amqp = r["ceiling"]["amqp"]
    for key in (
        "aiopika_roundtrip_confirms",
        "aiopika_roundtrip_confirms_quorum",
        "aiopika_roundtrip_noconfirms",
        "aiormq_roundtrip_confirms",
        "aiormq_publish_confirms",
        "aiormq_publish_noconfirms",
    ):
        assert amqp[key]["rate"] > 0, key
    for name in ("relay", "relay_amqp"):  # the WebSocket relay, bare and through RabbitMQ
        relay = r["ceiling"][name]
        assert relay["delivered"] > 0 and relay["missing"] == 0, (name, relay)
    assert r["ceiling"]["relay_amqp"]["cpu"]["cpu_s"]["drainer"] > 0
    paced = r["ceiling"]["relay_amqp"]["latency"]
    assert paced and all(x["delivered"] > 0 and x["missing"] == 0 for x in paced), paced

    # the peer: python-socketio delivered everything it was sent
    peer = r["peer"]["runs"][0]
    assert peer["throughput"]["delivered"] > 0 and peer["throughput"]["missing"] == 0, peer
    assert peer["tries"] and peer["tries"][0]["delivered"] > 0

    s = r["scaled"]
    for t in s["throughput"]:
        c = t["closed_loop"]
        assert c["delivered"] > 0 and c["missing"] == 0 and not c["errors"], c
        assert t["tries"] and all(v["delivered"] > 0 for v in t["tries"]), t["tries"]
    for x in s["latency"]:
        assert x["missing"] == 0 and x["latency_ms"]["p99"] is not None, x
        assert x["history"]["rows"] == x["sent"], x["history"]  # every message in MySQL
    fo = s["fanout"]
    assert fo["complete"] == fo["messages"] and fo["deliveries"] == fo["expected_deliveries"], fo
    idle = s["idle"]
    assert idle["failures"] == 0 and idle["open_at_end"] == idle["steps"][-1]["target"], idle
    assert all(st["gateway_rss_kib"] > 0 for st in idle["steps"])
    assert s["login"]["logins"] > 0 and s["login"]["codes"].get("200") == s["login"]["logins"]
    assert r["history"].get("live_rate"), r["history"]

    # issue 13: a big room and the in-process bus; issue 14: history scale-out
    b = r["bigroom"]
    # a change reaches each member as two small frames whatever the room's size: the
    # member_joined/member_left delta (issue 13's target: ≤ 300 B) and the timeline's notice
    # message (issue 17), counted apart
    j = b["joins"]
    assert j["changes"] == 4 and j["bytes_per_member_per_change"]["max"] < 300, j
    assert 0 < j["notice_bytes_per_member_per_change"]["max"] < 600, j
    assert b["fanout"]["messages"] == 3 and b["connect"]["rooms"] == 30
    assert [x["bindings"] for x in r["membus"]["runs"]] == [20, 2000]
    assert all(x["publishes_per_s"] > 0 for x in r["membus"]["runs"])
    hs = r["history_scale"]
    assert [x["shards"] for x in hs["runs"]] == [1, 2] and hs["ratio_2_over_1"] > 0
    # issue 17: search through the HTTP API, every query answered, each planner step timed
    se = r["search"]
    assert se["http"]["n"] == 40 and se["http"]["p99"] > 0 and se["in_process"]["n"] == 40
    assert sum(v["n"] for k, v in se["http_by_kind"].items() if "room" not in k) == 40

    # the report: targets table, tables and plots
    assert {t["target"][:10] for t in r["targets"]}
    md = (tmp_path / "results.md").read_text()
    for heading in (
        "## Targets",
        "## Throughput",
        "## Latency",
        "## Fan-out",
        "## Idle",
        "## Login",
        "## A big room",
        "## The in-process bus",
        "## History scale-out",
        "## Search",
    ):
        assert heading in md
    for png in ("throughput_vs_gateways.png", "latency_vs_rate.png", "memory_per_connection.png"):
        data = (tmp_path / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
