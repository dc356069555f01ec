"""results.json → results.md (tables, every figure next to its baselines of the same run, the
targets of issue 8 with their ratios) and PNG plots (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

TARGETS = {
    "throughput_vs_amqp": 0.60,  # 1-gateway cross-gateway throughput / raw aio-pika round trip
    "throughput_vs_peer": 3.0,  # / python-socketio with the same number of server processes
    "p99_at_1000_ms": 25.0,
    "fanout_p99_ms": 50.0,
    "idle_kib_per_socket": 30.0,
    "history_lag_p99_at_2000_ms": 250.0,
}


def _get(d: Any, *path: Any, default: Any = None) -> Any:
    for p in path:
        try:
            d = d[p]
        except (KeyError, IndexError, TypeError):
            return default
    return d


def _f(x: Any, nd: int = 0) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float | int):
        return f"{x:,.{nd}f}"
    return str(x)


def _ratio(a: Any, b: Any) -> float | None:
    if not a or not b:
        return None
    return float(a) / float(b)


def figures(r: dict[str, Any]) -> dict[str, Any]:
    """The headline numbers, derived from the raw results."""
    amqp = _get(r, "ceiling", "amqp", default={})
    tp = {t["gateways"]: t for t in _get(r, "scaled", "throughput", default=[])}
    peer = {p["servers"]: p for p in _get(r, "peer", "runs", default=[])}
    lat = {int(x["offered_rate"]): x for x in _get(r, "scaled", "latency", default=[])}
    idle_steps = _get(r, "scaled", "idle", "steps", default=[])
    start = _get(amqp, "aiopika_roundtrip_confirms", "rate")
    end = _get(r, "ceiling_end", "amqp", "aiopika_roundtrip_confirms", "rate")
    f: dict[str, Any] = {
        # the baseline of the ratios: measured at the start and at the end of the run (the
        # machine is shared), their mean
        "aiopika_confirms": (start + end) / 2 if start and end else start,
        "aiopika_confirms_start": start,
        "aiopika_confirms_end": end,
        "aiopika_confirms_quorum": _get(amqp, "aiopika_roundtrip_confirms_quorum", "rate"),
        "aiopika_noconfirms": _get(amqp, "aiopika_roundtrip_noconfirms", "rate"),
        "aiormq_confirms": _get(amqp, "aiormq_roundtrip_confirms", "rate"),
        "aiormq_confirms_nowait": _get(amqp, "aiormq_roundtrip_confirms_nowait", "rate"),
        "aiormq_publish_confirms": _get(amqp, "aiormq_publish_confirms", "rate"),
        "aiormq_publish_noconfirms": _get(amqp, "aiormq_publish_noconfirms", "rate"),
        "relay": _get(r, "ceiling", "relay", "delivered_rate"),
        "relay_amqp": _get(r, "ceiling", "relay_amqp", "delivered_rate"),
        "peer": {n: _get(p, "throughput", "delivered_rate") for n, p in peer.items()},
        "chat_sustained": {g: t.get("sustained_rate") for g, t in tp.items()},
        "chat_closed": {g: _get(t, "closed_loop", "delivered_rate") for g, t in tp.items()},
        "latency": lat,
        "fanout_p99": _get(r, "scaled", "fanout", "last_member_latency_ms", "p99"),
        "idle": idle_steps,
    }
    f["peer_sustained"] = {n: p.get("sustained_rate") for n, p in peer.items()}
    # the headline: the highest open-loop rate verified as sustained (no loss, no errors, no
    # growing latency, p99 <= 1 s); the closed loop (bounded backlog) is the upper estimate
    f["chat"] = dict(f["chat_sustained"])
    return f


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    f = figures(r)
    out = []
    one = f["chat"].get(1)
    out.append(
        {
            "target": "1-gateway max sustained throughput (verified open loop) >= 60% of raw "
            "aio-pika publish+consume (confirms)",
            "value": one,
            "baseline": f["aiopika_confirms"],
            "ratio": _ratio(one, f["aiopika_confirms"]),
            "goal": TARGETS["throughput_vs_amqp"],
            "higher_is_better": True,
        }
    )
    closed = f["chat_closed"].get(1)
    out.append(
        {
            "target": "(same, with the closed-loop figure: bounded backlog, bursts of `window`)",
            "value": closed,
            "baseline": f["aiopika_confirms"],
            "ratio": _ratio(closed, f["aiopika_confirms"]),
            "goal": TARGETS["throughput_vs_amqp"],
            "higher_is_better": True,
        }
    )
    bare = f["relay_amqp"]
    out.append(
        {
            "target": "(the ceiling of the target above: a bare WebSocket relay on the chat's "
            "broker path, no app logic (bench/relay_app.py with RELAY_AMQP_URL), closed loop, "
            "vs raw aio-pika)",
            "value": bare,
            "baseline": f["aiopika_confirms"],
            "ratio": _ratio(bare, f["aiopika_confirms"]),
            "goal": TARGETS["throughput_vs_amqp"],
            "higher_is_better": True,
        }
    )
    out.append(
        {
            "target": "(1 gateway, closed loop, vs that bare relay: what the chat's own logic "
            "costs; 1.0 = nothing)",
            "value": closed,
            "baseline": bare,
            "ratio": _ratio(closed, bare),
            "goal": None,
            "higher_is_better": True,
        }
    )
    c = costs(r)
    gw1, raw = c.get("chat_gateways_x1"), c.get("aiopika_roundtrip_confirms")
    out.append(
        {
            "target": "(CPU-normalised: raw aio-pika CPU per message / the gateway's, 1 gateway; "
            "the throughput on equal CPU)",
            "value": gw1,
            "baseline": raw,
            "ratio": _ratio(raw, gw1),
            "goal": TARGETS["throughput_vs_amqp"],
            "higher_is_better": True,
            "digits": 3,
        }
    )
    for n in sorted(f["peer"]):
        ours, theirs = c.get(f"chat_gateways_x{n}"), c.get(f"socketio_x{n}")
        out.append(
            {
                "target": f"(CPU-normalised: python-socketio servers' CPU per message / our "
                f"gateways', {n} process{'es' if n > 1 else ''} each)",
                "value": ours,
                "baseline": theirs,
                "ratio": _ratio(theirs, ours),
                "goal": TARGETS["throughput_vs_peer"],
                "higher_is_better": True,
                "digits": 3,
            }
        )
    for n in sorted(f["peer"]):
        ours, theirs = f["chat"].get(n), f["peer_sustained"].get(n)
        out.append(
            {
                "target": f"max sustained throughput >= 3x python-socketio ({n} server "
                f"process{'es' if n > 1 else ''} each)",
                "value": ours,
                "baseline": theirs,
                "ratio": _ratio(ours, theirs),
                "goal": TARGETS["throughput_vs_peer"],
                "higher_is_better": True,
            }
        )
    theirs = f["peer"].get(1)
    out.append(
        {
            "target": "(the ceiling of the 1-process target: the bare relay through RabbitMQ vs "
            "python-socketio x1, both closed loop; no gateway on this broker path can do better)",
            "value": f["relay_amqp"],
            "baseline": theirs,
            "ratio": _ratio(f["relay_amqp"], theirs),
            "goal": None,
            "higher_is_better": True,
        }
    )
    p99 = _get(f["latency"].get(1000), "latency_ms", "p99")
    out.append(
        {
            "target": "p99 <= 25 ms at 1,000 msg/s over 3 gateways",
            "value": p99,
            "baseline": TARGETS["p99_at_1000_ms"],
            "ratio": _ratio(p99, TARGETS["p99_at_1000_ms"]),
            "goal": 1.0,
            "higher_is_better": False,
        }
    )
    bare_lat = {
        int(x["offered_rate"]): x for x in _get(r, "ceiling", "relay_amqp", "latency", default=[])
    }
    bare_p99 = _get(bare_lat.get(1000), "latency_ms", "p99")
    out.append(
        {
            "target": "(the ceiling of the p99 target: the bare relay through RabbitMQ, one "
            "process, at 1,000 msg/s, p99 ms)",
            "value": bare_p99,
            "baseline": TARGETS["p99_at_1000_ms"],
            "ratio": _ratio(bare_p99, TARGETS["p99_at_1000_ms"]),
            "goal": None,
            "higher_is_better": False,
        }
    )
    out.append(
        {
            "target": "fan-out to a group of 100: p99 <= 50 ms (send -> last member)",
            "value": f["fanout_p99"],
            "baseline": TARGETS["fanout_p99_ms"],
            "ratio": _ratio(f["fanout_p99"], TARGETS["fanout_p99_ms"]),
            "goal": 1.0,
            "higher_is_better": False,
        }
    )
    last = f["idle"][-1] if f["idle"] else {}
    out.append(
        {
            "target": f"{_f(last.get('target'))} idle sockets on one gateway at <= 30 KiB each",
            "value": last.get("kib_per_socket"),
            "baseline": TARGETS["idle_kib_per_socket"],
            "ratio": _ratio(last.get("kib_per_socket"), TARGETS["idle_kib_per_socket"]),
            "goal": 1.0,
            "higher_is_better": False,
            "extra": f"{_f(last.get('sockets'))} open, {_f(last.get('failures'))} failed",
        }
    )
    lag = _get(f["latency"].get(2000), "history", "write_lag_ms", "p99")
    out.append(
        {
            "target": "history write lag p99 <= 250 ms at 2,000 msg/s offered to the cluster",
            "value": lag,
            "baseline": TARGETS["history_lag_p99_at_2000_ms"],
            "ratio": _ratio(lag, TARGETS["history_lag_p99_at_2000_ms"]),
            "goal": 1.0,
            "higher_is_better": False,
        }
    )
    paced = {x["rate"]: x for x in _get(r, "history", "paced", default=[])}
    if 2000 in paced:
        lag = paced[2000]["lag_ms"]["p99"]
        out.append(
            {
                "target": "history write lag p99 <= 250 ms at 2,000 msg/s: the writer alone "
                "(bench/history_writer.py, no gateways on the CPUs)",
                "value": lag,
                "baseline": TARGETS["history_lag_p99_at_2000_ms"],
                "ratio": _ratio(lag, TARGETS["history_lag_p99_at_2000_ms"]),
                "goal": 1.0,
                "higher_is_better": False,
            }
        )
    for t in out:
        ratio = t["ratio"]
        if ratio is None or t["goal"] is None:  # a reading, not a target
            t["met"] = None
        elif t["higher_is_better"]:
            t["met"] = ratio >= t["goal"]
        else:
            t["met"] = ratio <= t["goal"]
    return out


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _cpu(d: dict[str, Any] | None) -> str:
    pct = _get(d, "cpu", "cpu_pct_of_one_core", default={})
    out = ", ".join(f"{k} {v:.0f}%" for k, v in pct.items() if v >= 1) or "n/a"
    busy, psi = _get(d, "cpu", "machine_busy_pct"), _get(d, "cpu", "cpu_pressure_pct")
    if busy is not None:
        out += f" (machine: {busy:.0f}% busy, CPU pressure {psi:.0f}%)"
    return out


def _per_msg(run: dict[str, Any], groups: list[str]) -> float | None:
    cpu = _get(run, "cpu", "cpu_s", default={})
    n = run.get("delivered") or 0
    if not n or not any(g in cpu for g in groups):
        return None
    return 1000 * sum(cpu.get(g, 0.0) for g in groups) / n


def costs(r: dict[str, Any]) -> dict[str, Any]:
    """CPU milliseconds per delivered message, per system and component."""
    amqp = _get(r, "ceiling", "amqp", default={})
    out: dict[str, Any] = {
        k: _get(amqp, k, "cpu_ms_per_msg")
        for k in (
            "aiopika_roundtrip_confirms",
            "aiopika_roundtrip_confirms_quorum",
            "aiormq_roundtrip_confirms",
            "aiormq_roundtrip_confirms_nowait",
        )
    }
    out["relay"] = _per_msg(_get(r, "ceiling", "relay", default={}), ["relay"])
    bare = _get(r, "ceiling", "relay_amqp", default={})
    out["relay_amqp"] = _per_msg(bare, ["relay"])
    out["relay_amqp_drainer"] = _per_msg(bare, ["drainer"])
    out["relay_amqp_rabbitmq"] = _per_msg(bare, ["rabbitmq"])
    for p in _get(r, "peer", "runs", default=[]):
        out[f"socketio_x{p['servers']}"] = _per_msg(p["throughput"], ["servers"])
    for t in _get(r, "scaled", "throughput", default=[]):
        c, g = t["closed_loop"], t["gateways"]
        out[f"chat_gateways_x{g}"] = _per_msg(c, [f"gateway{i + 1}" for i in range(g)])
        out[f"chat_history_x{g}"] = _per_msg(c, ["history"])
        out[f"chat_rabbitmq_x{g}"] = _per_msg(c, ["rabbitmq"])
        out[f"chat_mysql_x{g}"] = _per_msg(c, ["mysql"])
    return out


def cost_rows(r: dict[str, Any]) -> list[list[Any]]:
    c = costs(r)
    base = c.get("aiopika_roundtrip_confirms")
    labels = [
        (
            "aiopika_roundtrip_confirms",
            "raw aio-pika publish→consume, confirms (one process: both ends)",
        ),
        ("aiopika_roundtrip_confirms_quorum", "raw aio-pika, + persistent + quorum queue"),
        ("aiormq_roundtrip_confirms", "raw aiormq publish→consume, confirms"),
        ("aiormq_roundtrip_confirms_nowait", "raw aiormq, confirms, no drain wait"),
        ("relay", "raw Starlette/uvicorn WebSocket relay process"),
        ("relay_amqp", "bare relay through RabbitMQ: the relay process (publish + deliver)"),
        ("relay_amqp_drainer", "bare relay through RabbitMQ: its quorum-queue drainer"),
        ("relay_amqp_rabbitmq", "bare relay through RabbitMQ: RabbitMQ (shared server)"),
    ]
    labels += [
        (k, f"python-socketio servers, {k.rsplit('x', 1)[1]} process(es)")
        for k in c
        if k.startswith("socketio_x")
    ]
    for k in [k for k in c if k.startswith("chat_gateways_x")]:
        g = k.rsplit("x", 1)[1]
        labels += [
            (
                k,
                f"**chat: the gateway(s), {g} gateway(s)** (publish at one end, deliver at the other)",
            ),
            (f"chat_history_x{g}", f"chat: history writer ({g} gateway(s))"),
            (
                f"chat_rabbitmq_x{g}",
                f"chat: RabbitMQ ({g} gateway(s); shared server, others included)",
            ),
            (f"chat_mysql_x{g}", f"chat: MariaDB ({g} gateway(s); shared server, others included)"),
        ]
    rows = []
    for key, label in labels:
        v = c.get(key)
        if v is None:
            continue
        rows.append([label, _f(v, 3), _f(_ratio(v, base), 2) + " x raw aio-pika"])
    return rows


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    f = figures(r)
    s = r.get("scaled", {})
    md = [f"# Benchmark results ({r['kind']})\n"]
    md.append(
        f"- date: {r['date']}; command: `{r['command']}` (`{r['argv']}`), {r.get('total_s')} s\n"
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['loadavg_at_start']} (shared machine: "
        "compare ratios, not absolute numbers)\n"
        "- loopback only; RabbitMQ and MariaDB are the machine's shared instances, each part on "
        "its own vhost and database\n"
    )
    if r.get("errors"):
        md.append(
            "\n**Errors:** " + "; ".join(f"{k}: {v[:300]}" for k, v in r["errors"].items()) + "\n"
        )

    md.append("\n## Targets (issue 8)\n\n")
    rows = []
    for t in targets(r):
        met = {True: "**met**", False: "**missed**", None: "n/a"}[t["met"]]
        goal = t["goal"]
        if goal is None:
            met = "reading"
        rows.append(
            [
                t["target"],
                _f(t["value"], t.get("digits", 1)),
                _f(t["baseline"], t.get("digits", 1)),
                _f(t["ratio"], 2)
                + (f" (goal {'>=' if t['higher_is_better'] else '<='} {goal})" if goal else ""),
                met,
            ]
        )
    md.append(_table(["target", "ours", "baseline / limit", "ratio", "result"], rows))

    md.append("\n## Throughput: ours vs ceilings and the peer (msg/s delivered)\n\n")
    rows = [
        [
            "raw aio-pika publish→consume, confirms (one process): mean of the start "
            f"({_f(f['aiopika_confirms_start'])}) and the end ({_f(f['aiopika_confirms_end'])}) "
            "of the run",
            _f(f["aiopika_confirms"]),
            "1.00",
        ],
        [
            "raw aio-pika, confirms, persistent + quorum queue consumed (the chat's broker path)",
            _f(f["aiopika_confirms_quorum"]),
            _f(_ratio(f["aiopika_confirms_quorum"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw aio-pika publish→consume, no confirms",
            _f(f["aiopika_noconfirms"]),
            _f(_ratio(f["aiopika_noconfirms"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw aiormq publish→consume, confirms",
            _f(f["aiormq_confirms"]),
            _f(_ratio(f["aiormq_confirms"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw aiormq publish→consume, confirms, no drain wait",
            _f(f["aiormq_confirms_nowait"]),
            _f(_ratio(f["aiormq_confirms_nowait"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw aiormq publish-only, confirms",
            _f(f["aiormq_publish_confirms"]),
            _f(_ratio(f["aiormq_publish_confirms"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw aiormq publish-only, no confirms",
            _f(f["aiormq_publish_noconfirms"]),
            _f(_ratio(f["aiormq_publish_noconfirms"], f["aiopika_confirms"]), 2),
        ],
        [
            "raw Starlette/uvicorn WebSocket relay (1 process)",
            _f(f["relay"]),
            _f(_ratio(f["relay"], f["aiopika_confirms"]), 2),
        ],
        [
            "**bare relay through RabbitMQ** (the same relay; each send published persistent + "
            "mandatory with a confirm, delivered from its queue; a quorum queue drained by a "
            "second process): the ceiling of a gateway on this broker path",
            _f(f["relay_amqp"]),
            _f(_ratio(f["relay_amqp"], f["aiopika_confirms"]), 2),
        ],
    ]

    def tries(label: str, run: dict[str, Any]) -> None:
        for v in run.get("tries", []):
            errs = sum(v["errors"].values())
            rows.append(
                [
                    f"{label}: open loop at {_f(v['offered_rate'])} msg/s ({v['fraction']:.0%}): "
                    f"{'**sustained**' if v['sustained'] else 'not sustained'} (missing "
                    f"{v['missing']}, errors {errs}, p99 {_f(v['latency_ms']['p99'], 1)} ms)",
                    _f(v["delivered_rate"]),
                    _f(_ratio(v["delivered_rate"], f["aiopika_confirms"]), 2),
                ]
            )

    for p in _get(r, "peer", "runs", default=[]):
        n, v = p["servers"], _get(p, "throughput", "delivered_rate")
        tp = p["throughput"]
        label = f"python-socketio + AsyncAioPikaManager, {n} process(es)"
        rows.append(
            [
                f"{label}: closed loop (window {tp.get('window')}/pair, {tp['pairs']} pairs)",
                _f(v),
                _f(_ratio(v, f["aiopika_confirms"]), 2),
            ]
        )
        tries(f"python-socketio x{n}", p)
    for t in s.get("throughput", []):
        g = t["gateways"]
        c = t["closed_loop"]
        rows.append(
            [
                f"**chat, {g} gateway(s)**: closed loop (window {c.get('window')}/pair, "
                f"{c['pairs']} pairs)",
                _f(c["delivered_rate"]),
                _f(_ratio(c["delivered_rate"], f["aiopika_confirms"]), 2),
            ]
        )
        tries(f"**chat, {g} gateway(s)**", t)
    md.append(_table(["system", "msg/s", "ratio to raw aio-pika (confirms)"], rows))

    if s.get("throughput"):
        md.append(
            "\nCPU during the closed-loop runs (% of one core, from /proc/<pid>/stat; rabbitmq "
            "and mysql are the shared servers, other tenants included; machine: all cores, every "
            "tenant, and /proc/pressure/cpu 'some', the share of time a runnable task waited):\n\n"
        )
        rows = [
            [
                t["gateways"],
                _cpu(t["closed_loop"]),
                _f(t["closed_loop"].get("generator_cpu_pct"), 0) + "%",
                _f(_get(t, "closed_loop", "ack_latency_ms", "p50"), 1),
                _f(_get(t, "closed_loop", "history_after", "drain_s"), 1),
            ]
            for t in s["throughput"]
        ]
        for name in ("relay", "relay_amqp"):
            relay = _get(r, "ceiling", name, default={})
            rows.append(
                [
                    name.replace("_amqp", " through RabbitMQ"),
                    _cpu(relay),
                    _f(relay.get("generator_cpu_pct"), 0) + "%",
                    _f(_get(relay, "ack_latency_ms", "p50"), 1),
                    "-",
                ]
            )
        for p in _get(r, "peer", "runs", default=[]):
            rows.append(
                [
                    f"socketio x{p['servers']}",
                    _cpu(p["throughput"]),
                    _f(p["throughput"].get("generator_cpu_pct"), 0) + "%",
                    _f(_get(p, "throughput", "ack_latency_ms", "p50"), 1),
                    "-",
                ]
            )
        md.append(
            _table(
                [
                    "gateways",
                    "server-side CPU",
                    "load generator CPU",
                    "ack p50 ms",
                    "history backlog drain s",
                ],
                rows,
            )
        )

    md.append(
        "\n## CPU cost per delivered message (ms of CPU; far less sensitive to the other tenants "
        "than rates are)\n\n"
    )
    md.append(_table(["system (closed-loop run)", "ms CPU / message", "ratio"], cost_rows(r)))

    if s.get("latency"):
        md.append(
            "\n## Latency at fixed rates (3 gateways, sender and receiver on different gateways)\n\n"
        )
        rows = []
        for x in s["latency"]:
            lm, h = x["latency_ms"], x.get("history", {})
            rows.append(
                [
                    _f(x["offered_rate"]),
                    _f(x["delivered_rate"]),
                    _f(lm["p50"], 1),
                    _f(lm["p99"], 1),
                    _f(lm["p999"], 1),
                    _f(lm["max"], 1),
                    _f(_get(x, "ack_latency_ms", "p99"), 1),
                    f"{x['missing']} / {sum(x['errors'].values())}",
                    _f(_get(h, "write_lag_ms", "p50"), 0)
                    + " / "
                    + _f(_get(h, "write_lag_ms", "p99"), 0),
                    _f(h.get("write_rate"), 0),
                    _cpu(x),
                ]
            )
        peer_lat = [
            (f"socketio x{p['servers']}", x)
            for p in _get(r, "peer", "runs", default=[])
            for x in p.get("latency", [])
        ]
        peer_lat += [
            ("bare relay through RabbitMQ, 1 process", x)
            for x in _get(r, "ceiling", "relay_amqp", "latency", default=[])
        ]
        for name, x in peer_lat:
            lm = x["latency_ms"]
            rows.append(
                [
                    f"{_f(x['offered_rate'])} ({name})",
                    _f(x["delivered_rate"]),
                    _f(lm["p50"], 1),
                    _f(lm["p99"], 1),
                    _f(lm["p999"], 1),
                    _f(lm["max"], 1),
                    _f(_get(x, "ack_latency_ms", "p99"), 1),
                    f"{x['missing']} / {sum(x['errors'].values())}",
                    "-",
                    "-",
                    "-",
                ]
            )
        md.append(
            _table(
                [
                    "offered msg/s",
                    "delivered msg/s",
                    "p50 ms",
                    "p99 ms",
                    "p99.9 ms",
                    "max ms",
                    "ack p99 ms",
                    "missing / errors",
                    "history lag p50 / p99 ms",
                    "history rows/s",
                    "CPU",
                ],
                rows,
            )
        )

    fo = s.get("fanout")
    if fo:
        md.append("\n## Fan-out (one sender, a group spread over 3 gateways)\n\n")
        md.append(
            _table(
                [
                    "members",
                    "messages @ rate",
                    "complete",
                    "send→last member p50 / p99 / max ms",
                    "per delivery p50 / p99 ms",
                    "deliveries/s",
                    "CPU",
                ],
                [
                    [
                        fo["members"],
                        f"{fo['messages']} @ {_f(fo['rate'])}/s",
                        f"{fo['complete']}/{fo['messages']}",
                        " / ".join(
                            _f(fo["last_member_latency_ms"][k], 1) for k in ("p50", "p99", "max")
                        ),
                        " / ".join(_f(fo["per_delivery_latency_ms"][k], 1) for k in ("p50", "p99")),
                        _f(fo["deliveries_per_s"]),
                        _cpu(fo),
                    ]
                ],
            )
        )

    idle = s.get("idle")
    if idle:
        md.append("\n## Idle sockets on one gateway process (RSS from /proc/<pid>/status)\n\n")
        deflate = s.get("idle_deflate") or {"steps": []}
        rows = [
            [
                _f(st["sockets"]) + (" (permessage-deflate, another gateway)" if z else ""),
                _f(st["gateway_rss_base_kib"] / 1024, 1),
                _f(st["gateway_rss_kib"] / 1024, 1),
                _f(st["kib_per_socket"], 1),
                _f(st["connect_rate_per_s"]),
                _f(st["generator_kib_per_socket"], 1),
                st["failures"],
            ]
            for z, st in [(False, x) for x in idle["steps"]] + [(True, x) for x in deflate["steps"]]
        ]
        md.append(
            _table(
                [
                    "sockets",
                    "RSS before MiB",
                    "RSS MiB",
                    "KiB / socket",
                    "connects/s",
                    "generator KiB / socket",
                    "failures",
                ],
                rows,
            )
        )
        md.append(
            f"\nAll {idle['open_at_end']} sockets still open at the end; gateway alive: "
            f"{idle.get('gateway_alive_after')}.\n"
        )

    h = r.get("history")
    lat2000 = _get(f["latency"].get(2000) or (s.get("latency") or [{}])[-1], "history", default={})
    md.append("\n## History writer\n\n")
    rows = []
    for x in s.get("latency", []):
        hh = x.get("history", {})
        rows.append(
            [
                f"in the cluster at {_f(x['offered_rate'])} msg/s offered",
                _f(hh.get("write_rate")),
                _f(_get(hh, "write_lag_ms", "p50")),
                _f(_get(hh, "write_lag_ms", "p99")),
                _f(_get(hh, "write_lag_ms", "max")),
                f"le {_f(_get(hh, 'metric', 'p99_le_s'), 3)} s",
            ]
        )
    if h and not h.get("error"):
        rows.append(
            [
                f"bench/history_writer.py {' '.join(h['args'])} (live, publisher as fast as it can)",
                _f(h.get("live_rate")),
                _f(_get(h, "live_lag_ms", "p50")),
                _f(_get(h, "live_lag_ms", "p99")),
                _f(_get(h, "live_lag_ms", "max")),
                "-",
            ]
        )
        for x in h.get("paced", []):
            rows.append(
                [
                    f"bench/history_writer.py paced {_f(x['rate'])} msg/s (writer alone, no gateways)",
                    _f(x["rate"]),
                    _f(x["lag_ms"]["p50"]),
                    _f(x["lag_ms"]["p99"]),
                    _f(x["lag_ms"]["max"]),
                    "-",
                ]
            )
        rows.append(
            [
                "bench/history_writer.py backlog drain (writer alone)",
                _f(h.get("backlog_drain_rate")),
                "-",
                "-",
                "-",
                "-",
            ]
        )
    elif h:
        md.append(f"bench/history_writer.py failed: {h.get('error', '')[:500]}\n\n")
    del lat2000
    md.append(
        _table(
            [
                "run",
                "rows/s written",
                "lag p50 ms",
                "lag p99 ms",
                "lag max ms",
                "chat_history_write_lag_seconds p99 bucket",
            ],
            rows,
        )
    )

    lg = s.get("login")
    if lg:
        a = lg["argon2"]
        md.append("\n## Login rate (gunicorn auth, argon2id)\n\n")
        md.append(
            _table(
                [
                    "logins/s",
                    "latency p50 / p99 ms",
                    "concurrency",
                    "argon2 (t, m KiB, p)",
                    "one verify ms",
                    "bound: cores / verify",
                    "ratio to bound",
                    "auth CPU",
                ],
                [
                    [
                        _f(lg["logins_per_s"], 1),
                        f"{_f(lg['latency_ms']['p50'], 0)} / {_f(lg['latency_ms']['p99'], 0)}",
                        lg["concurrency"],
                        f"{a['time_cost']}, {a['memory_kib']}, {a['parallelism']}",
                        _f(a["verify_ms"], 1),
                        _f(a["bound_logins_per_s"], 1),
                        _f(_ratio(lg["logins_per_s"], a["bound_logins_per_s"]), 2),
                        _cpu(lg),
                    ]
                ],
            )
        )

    prof = s.get("profile")
    if prof and prof.get("top_self"):
        md.append(
            f"\n## Gateway profile (py-spy, {prof['seconds']} s at {_f(prof['load_delivered_rate'])} msg/s, "
            f"1 gateway closed loop; [{prof['svg']}]({prof['svg']}))\n\n"
        )
        rows = [[x["frame"], x["pct"]] for x in prof["top_self"][:12]]
        md.append(_table(["frame (self time)", "% of samples"], rows))
        md.append("\n")
        rows = [[x["frame"], x["pct"]] for x in prof["by_package_self"][:10]]
        md.append(_table(["package / module (self time)", "% of samples"], rows))
        hp = prof.get("history") or {}
        if hp.get("top_self"):
            md.append(
                f"\nThe history writer at the same time ({hp.get('cpu_pct_of_one_core')}% of a "
                f"core; [{hp['raw']}]({hp['raw']})):\n\n"
            )
            rows = [[x["frame"], x["pct"]] for x in hp["top_self"][:8]]
            md.append(_table(["frame (self time)", "% of samples"], rows))
            md.append("\n")
            rows = [[x["frame"], x["pct"]] for x in hp["by_package_self"][:8]]
            md.append(_table(["package / module (self time)", "% of samples"], rows))
    md.append(
        "\nPlots: [throughput](throughput_vs_gateways.png), [latency](latency_vs_rate.png), "
        "[memory](memory_per_connection.png). Raw numbers: results.json.\n"
    )
    return "".join(md)


def plots(r: dict[str, Any], out: Path) -> list[str]:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f = figures(r)
    s = r.get("scaled", {})
    made = []
    stamp = f"{r['machine']['cpu']}, {r['machine']['cores']} cores — {r['date']}"

    # throughput vs gateways
    fig, ax = plt.subplots(figsize=(8, 5))
    gws = sorted(f["chat"])
    if gws:
        ax.plot(
            gws,
            [f["chat_closed"][g] for g in gws],
            "o-",
            label="chat: closed loop (bounded backlog)",
        )
        sus = [(g, f["chat_sustained"][g]) for g in gws if f["chat_sustained"].get(g)]
        if sus:
            ax.plot(
                [g for g, _ in sus], [v for _, v in sus], "s--", label="chat: verified open loop"
            )
    peer = sorted(f["peer"].items())
    if peer:
        ax.plot(
            [n for n, _ in peer],
            [v for _, v in peer],
            "^:",
            label="python-socketio + AioPikaManager: closed loop",
        )
        ps = [(n, v) for n, v in sorted(f["peer_sustained"].items()) if v]
        if ps:
            ax.plot(
                [n for n, _ in ps],
                [v for _, v in ps],
                "v--",
                label="python-socketio: verified open loop",
            )
    for key, label, style in (
        ("aiopika_confirms", "raw aio-pika pub→consume, confirms", "k--"),
        ("aiopika_confirms_quorum", "raw aio-pika + quorum queue (chat's path)", "k:"),
        ("aiopika_noconfirms", "raw aio-pika, no confirms", "c--"),
        ("aiormq_confirms_nowait", "raw aiormq pub→consume, confirms, no drain wait", "m:"),
    ):
        if f.get(key):
            ax.axhline(f[key], linestyle=style[1:], color=style[0], label=f"{label}: {f[key]:,.0f}")
    ax.set_xlabel("gateways / server processes")
    ax.set_ylabel("messages delivered per second")
    ax.set_xticks([1, 2, 3])
    ax.set_title("Cross-gateway DM throughput", fontsize=11)
    ax.legend(fontsize=7)
    fig.text(0.01, 0.01, stamp + f" — relay ceiling {f['relay'] or 0:,.0f} msg/s", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "throughput_vs_gateways.png", dpi=110)
    plt.close(fig)
    made.append("throughput_vs_gateways.png")

    # latency percentiles vs rate
    lat = s.get("latency", [])
    fig, ax = plt.subplots(figsize=(8, 5))
    if lat:
        rates = [x["offered_rate"] for x in lat]
        for k, style in (("p50", "o-"), ("p99", "s-"), ("p999", "^-")):
            ax.plot(rates, [x["latency_ms"][k] for x in lat], style, label=f"send→receive {k}")
        ax.plot(
            rates,
            [_get(x, "history", "write_lag_ms", "p99") for x in lat],
            "x:",
            label="history write lag p99",
        )
        ax.axhline(25, color="r", linestyle="--", label="target p99 at 1,000 msg/s: 25 ms")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(rates)
        ax.set_xticklabels([str(int(x)) for x in rates])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("offered rate (msg/s), 3 gateways")
    ax.set_ylabel("milliseconds")
    ax.set_title("End-to-end latency vs rate", fontsize=11)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, stamp, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "latency_vs_rate.png", dpi=110)
    plt.close(fig)
    made.append("latency_vs_rate.png")

    # memory per connection
    steps = _get(s, "idle", "steps", default=[])
    fig, ax = plt.subplots(figsize=(8, 5))
    if steps:
        xs = [st["sockets"] for st in steps]
        ax.plot(
            xs, [st["kib_per_socket"] for st in steps], "o-", label="gateway: RSS delta / sockets"
        )
        ax.plot(
            xs,
            [st["generator_kib_per_socket"] for st in steps],
            "s:",
            label="load generator (websockets client)",
        )
        dz = _get(s, "idle_deflate", "steps", default=[])
        if dz:
            ax.plot(
                [st["sockets"] for st in dz],
                [st["kib_per_socket"] for st in dz],
                "^--",
                label="gateway, clients negotiating permessage-deflate (browsers)",
            )
        ax.axhline(30, color="r", linestyle="--", label="target: 30 KiB")
        ax.set_xscale("log")
        xs = sorted({*xs, *(st["sockets"] for st in dz)})
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{x:,}" for x in xs])
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(bottom=0)
    ax.set_xlabel("idle authenticated sockets on one gateway")
    ax.set_ylabel("KiB per socket")
    ax.set_title("Memory per connection", fontsize=11)
    ax.legend(fontsize=8)
    fig.text(0.01, 0.01, stamp, fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(out / "memory_per_connection.png", dpi=110)
    plt.close(fig)
    made.append("memory_per_connection.png")
    return made


def write_report(results: dict[str, Any], out: Path) -> None:
    results["targets"] = targets(results)
    results["cpu_ms_per_message"] = costs(results)
    (out / "results.md").write_text(markdown(results))
    plots(results, out)


if __name__ == "__main__":
    import json
    import sys

    d = Path(sys.argv[1] if len(sys.argv) > 1 else "docs/benchmarks")
    write_report(json.loads((d / "results.json").read_text()), d)
