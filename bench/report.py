"""results.json → results.md (tables, every figure next to its baselines of the same run, the
targets of issue 8 with their ratios) and PNG plots (matplotlib, no display needed).

The Markdown is table-driven: ``DOCUMENT`` lists the sections in order; a section is a heading,
optional text, and ``Table`` specs (a ``Col`` per column: its heading, and how to render its cell
of one record); ``render`` is the one renderer."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
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


def _es(n: int) -> str:
    return "es" if n > 1 else ""


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


# targets -----------------------------------------------------------------------------------
def _target(
    label: str,
    value: Any,
    baseline: Any,
    goal: Any,
    *,
    lower_is_better: bool = False,
    inverse: bool = False,
    digits: int | None = None,
    extra: str | None = None,
) -> dict[str, Any]:
    """One row of the targets: ratio = value / baseline (baseline / value if ``inverse``)."""
    t: dict[str, Any] = {
        "target": label,
        "value": value,
        "baseline": baseline,
        "ratio": _ratio(baseline, value) if inverse else _ratio(value, baseline),
        "goal": goal,
        "higher_is_better": not lower_is_better,
    }
    if digits is not None:
        t["digits"] = digits
    if extra is not None:
        t["extra"] = extra
    return t


def targets(r: dict[str, Any]) -> list[dict[str, Any]]:
    f, c = figures(r), costs(r)
    amqp, bare, closed = f["aiopika_confirms"], f["relay_amqp"], f["chat_closed"].get(1)
    vs_amqp, vs_peer = TARGETS["throughput_vs_amqp"], TARGETS["throughput_vs_peer"]
    p99_goal, fanout_goal = TARGETS["p99_at_1000_ms"], TARGETS["fanout_p99_ms"]
    idle_goal, lag_goal = TARGETS["idle_kib_per_socket"], TARGETS["history_lag_p99_at_2000_ms"]
    peers = sorted(f["peer"])
    bare_lat = {
        int(x["offered_rate"]): x for x in _get(r, "ceiling", "relay_amqp", "latency", default=[])
    }
    last = f["idle"][-1] if f["idle"] else {}
    paced = {x["rate"]: x for x in _get(r, "history", "paced", default=[])}
    out = [
        _target(
            "1-gateway max sustained throughput (verified open loop) >= 60% of raw "
            "aio-pika publish+consume (confirms)",
            f["chat"].get(1),
            amqp,
            vs_amqp,
        ),
        _target(
            "(same, with the closed-loop figure: bounded backlog, bursts of `window`)",
            closed,
            amqp,
            vs_amqp,
        ),
        _target(
            "(the ceiling of the target above: a bare WebSocket relay on the chat's "
            "broker path, no app logic (bench/relay_app.py with RELAY_AMQP_URL), closed loop, "
            "vs raw aio-pika)",
            bare,
            amqp,
            vs_amqp,
        ),
        _target(
            "(1 gateway, closed loop, vs that bare relay: what the chat's own logic "
            "costs; 1.0 = nothing)",
            closed,
            bare,
            None,
        ),
        _target(
            "(CPU-normalised: raw aio-pika CPU per message / the gateway's, 1 gateway; "
            "the throughput on equal CPU)",
            c.get("chat_gateways_x1"),
            c.get("aiopika_roundtrip_confirms"),
            vs_amqp,
            inverse=True,
            digits=3,
        ),
        *(
            _target(
                f"(CPU-normalised: python-socketio servers' CPU per message / our "
                f"gateways', {n} process{_es(n)} each)",
                c.get(f"chat_gateways_x{n}"),
                c.get(f"socketio_x{n}"),
                vs_peer,
                inverse=True,
                digits=3,
            )
            for n in peers
        ),
        *(
            _target(
                f"max sustained throughput >= 3x python-socketio ({n} server process{_es(n)} each)",
                f["chat"].get(n),
                f["peer_sustained"].get(n),
                vs_peer,
            )
            for n in peers
        ),
        _target(
            "(the ceiling of the 1-process target: the bare relay through RabbitMQ vs "
            "python-socketio x1, both closed loop; no gateway on this broker path can do better)",
            bare,
            f["peer"].get(1),
            None,
        ),
        _target(
            "p99 <= 25 ms at 1,000 msg/s over 3 gateways",
            _get(f["latency"].get(1000), "latency_ms", "p99"),
            p99_goal,
            1.0,
            lower_is_better=True,
        ),
        _target(
            "(the ceiling of the p99 target: the bare relay through RabbitMQ, one "
            "process, at 1,000 msg/s, p99 ms)",
            _get(bare_lat.get(1000), "latency_ms", "p99"),
            p99_goal,
            None,
            lower_is_better=True,
        ),
        _target(
            "fan-out to a group of 100: p99 <= 50 ms (send -> last member)",
            f["fanout_p99"],
            fanout_goal,
            1.0,
            lower_is_better=True,
        ),
        _target(
            f"{_f(last.get('target'))} idle sockets on one gateway at <= 30 KiB each",
            last.get("kib_per_socket"),
            idle_goal,
            1.0,
            lower_is_better=True,
            extra=f"{_f(last.get('sockets'))} open, {_f(last.get('failures'))} failed",
        ),
        _target(
            "history write lag p99 <= 250 ms at 2,000 msg/s offered to the cluster",
            _get(f["latency"].get(2000), "history", "write_lag_ms", "p99"),
            lag_goal,
            1.0,
            lower_is_better=True,
        ),
    ]
    if 2000 in paced:
        out.append(
            _target(
                "history write lag p99 <= 250 ms at 2,000 msg/s: the writer alone "
                "(bench/history_writer.py, no gateways on the CPUs)",
                paced[2000]["lag_ms"]["p99"],
                lag_goal,
                1.0,
                lower_is_better=True,
            )
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


# CPU ---------------------------------------------------------------------------------------
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


COST_LABELS = [
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
# per number of gateways g: (key prefix, label)
CHAT_COST_LABELS = [
    (
        "chat_gateways_x",
        "**chat: the gateway(s), {g} gateway(s)** (publish at one end, deliver at the other)",
    ),
    ("chat_history_x", "chat: history writer ({g} gateway(s))"),
    ("chat_rabbitmq_x", "chat: RabbitMQ ({g} gateway(s); shared server, others included)"),
    ("chat_mysql_x", "chat: MariaDB ({g} gateway(s); shared server, others included)"),
]


def cost_rows(r: dict[str, Any]) -> list[list[Any]]:
    c = costs(r)
    base = c.get("aiopika_roundtrip_confirms")
    labels = list(COST_LABELS)
    labels += [
        (k, f"python-socketio servers, {k.rsplit('x', 1)[1]} process(es)")
        for k in c
        if k.startswith("socketio_x")
    ]
    for k in [k for k in c if k.startswith("chat_gateways_x")]:
        g = k.rsplit("x", 1)[1]
        labels += [(prefix + g, label.format(g=g)) for prefix, label in CHAT_COST_LABELS]
    return [
        [label, _f(c[key], 3), _f(_ratio(c[key], base), 2) + " x raw aio-pika"]
        for key, label in labels
        if c.get(key) is not None
    ]


# the one renderer --------------------------------------------------------------------------
class Ctx:
    """What the tables read: the raw results, the derived figures, the scaled part."""

    def __init__(self, r: dict[str, Any]) -> None:
        self.r = r
        self.f = figures(r)
        self.s: dict[str, Any] = r.get("scaled", {})

    def vs_raw(self, label: str, value: Any) -> list[Any]:
        """A throughput row: label, msg/s, ratio to raw aio-pika (confirms)."""
        return [label, _f(value), _f(_ratio(value, self.f["aiopika_confirms"]), 2)]


Col = tuple[str, Callable[[Any], Any]]  # a column: its heading, and its cell of one record


def num(head: str, *path: Any, nd: int = 0, div: float | None = None) -> Col:
    """A column of numbers: ``_get(record, *path)``, formatted with ``nd`` decimals."""

    def cell(rec: Any) -> str:
        v = _get(rec, *path)
        return _f(v / div if div and v is not None else v, nd)

    return head, cell


@dataclass(frozen=True)
class Table:
    """A Markdown table: ``cols`` applied to each record of ``records(ctx)``; or, with no
    ``cols``, ``records`` gives the rows themselves and ``heads`` names the columns."""

    records: Callable[[Ctx], Iterable[Any]]
    cols: Sequence[Col] = ()
    heads: Sequence[str] = ()

    def render(self, ctx: Ctx) -> str:
        heads = [h for h, _ in self.cols] or list(self.heads)
        recs = self.records(ctx)
        rows = [[cell(rec) for _, cell in self.cols] for rec in recs] if self.cols else recs
        return _table(heads, list(rows))


Part = str | Table | Callable[[Ctx], str]


@dataclass(frozen=True)
class Section:
    heading: str | None  # "## heading"; None continues the section before
    parts: Sequence[Part]
    when: Callable[[Ctx], Any] = lambda ctx: True


def _table(head: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def render(doc: Sequence[Section], ctx: Ctx) -> str:
    md: list[str] = []
    for section in doc:
        if not section.when(ctx):
            continue
        if section.heading is not None:
            md.append(f"\n## {section.heading}\n\n")
        for part in section.parts:
            if isinstance(part, Table):
                md.append(part.render(ctx))
            else:
                md.append(part if isinstance(part, str) else part(ctx))
    return "".join(md)


# the sections ------------------------------------------------------------------------------
def _header(ctx: Ctx) -> str:
    r, m = ctx.r, ctx.r["machine"]
    md = (
        f"# Benchmark results ({r['kind']})\n"
        f"- date: {r['date']}; command: `{r['command']}` (`{r['argv']}`), {r.get('total_s')} s\n"
        f"- machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM, Linux {m['kernel']}, "
        f"Python {m['python']}; load average at start {m['loadavg_at_start']} (shared machine: "
        "compare ratios, not absolute numbers)\n"
        "- loopback only; RabbitMQ and MariaDB are the machine's shared instances, each part on "
        "its own vhost and database\n"
    )
    if r.get("errors"):
        md += "\n**Errors:** " + "; ".join(f"{k}: {v[:300]}" for k, v in r["errors"].items())
        md += "\n"
    return md


def _ratio_goal(t: dict[str, Any]) -> str:
    goal, ratio = t["goal"], _f(t["ratio"], 2)
    return f"{ratio} (goal {'>=' if t['higher_is_better'] else '<='} {goal})" if goal else ratio


def _result(t: dict[str, Any]) -> str:
    if t["goal"] is None:
        return "reading"
    return {True: "**met**", False: "**missed**", None: "n/a"}[t["met"]]


TARGETS_TABLE = Table(
    lambda ctx: targets(ctx.r),
    [
        ("target", lambda t: t["target"]),
        ("ours", lambda t: _f(t["value"], t.get("digits", 1))),
        ("baseline / limit", lambda t: _f(t["baseline"], t.get("digits", 1))),
        ("ratio", _ratio_goal),
        ("result", _result),
    ],
)

# (label, figure) rows of the throughput table after the first (the baseline itself)
CEILING_ROWS = [
    (
        "raw aio-pika, confirms, persistent + quorum queue consumed (the chat's broker path)",
        "aiopika_confirms_quorum",
    ),
    ("raw aio-pika publish→consume, no confirms", "aiopika_noconfirms"),
    ("raw aiormq publish→consume, confirms", "aiormq_confirms"),
    ("raw aiormq publish→consume, confirms, no drain wait", "aiormq_confirms_nowait"),
    ("raw aiormq publish-only, confirms", "aiormq_publish_confirms"),
    ("raw aiormq publish-only, no confirms", "aiormq_publish_noconfirms"),
    ("raw Starlette/uvicorn WebSocket relay (1 process)", "relay"),
    (
        "**bare relay through RabbitMQ** (the same relay; each send published persistent + "
        "mandatory with a confirm, delivered from its queue; a quorum queue drained by a "
        "second process): the ceiling of a gateway on this broker path",
        "relay_amqp",
    ),
]


def _tries(ctx: Ctx, label: str, run: dict[str, Any]) -> list[list[Any]]:
    """The open-loop tries of a run, one row each."""
    return [
        ctx.vs_raw(
            f"{label}: open loop at {_f(v['offered_rate'])} msg/s ({v['fraction']:.0%}): "
            f"{'**sustained**' if v['sustained'] else 'not sustained'} (missing "
            f"{v['missing']}, errors {sum(v['errors'].values())}, "
            f"p99 {_f(v['latency_ms']['p99'], 1)} ms)",
            v["delivered_rate"],
        )
        for v in run.get("tries", [])
    ]


def _throughput_rows(ctx: Ctx) -> list[list[Any]]:
    f = ctx.f
    start, end = _f(f["aiopika_confirms_start"]), _f(f["aiopika_confirms_end"])
    rows = [
        [
            "raw aio-pika publish→consume, confirms (one process): mean of the start "
            f"({start}) and the end ({end}) of the run",
            _f(f["aiopika_confirms"]),
            "1.00",
        ]
    ]
    rows += [ctx.vs_raw(label, f[key]) for label, key in CEILING_ROWS]
    for p in _get(ctx.r, "peer", "runs", default=[]):
        n, tp = p["servers"], p["throughput"]
        label = f"python-socketio + AsyncAioPikaManager, {n} process(es): closed loop"
        window = f"(window {tp.get('window')}/pair, {tp['pairs']} pairs)"
        rows.append(ctx.vs_raw(f"{label} {window}", tp.get("delivered_rate")))
        rows += _tries(ctx, f"python-socketio x{n}", p)
    for t in ctx.s.get("throughput", []):
        c, label = t["closed_loop"], f"**chat, {t['gateways']} gateway(s)**"
        window = f"(window {c.get('window')}/pair, {c['pairs']} pairs)"
        rows.append(ctx.vs_raw(f"{label}: closed loop {window}", c["delivered_rate"]))
        rows += _tries(ctx, label, t)
    return rows


def _cpu_runs(ctx: Ctx) -> list[tuple[Any, dict[str, Any], str]]:
    """(name, run, history backlog drain) of every closed-loop run."""
    runs = [
        (t["gateways"], t["closed_loop"], _f(_get(t, "closed_loop", "history_after", "drain_s"), 1))
        for t in ctx.s["throughput"]
    ]
    runs += [
        (name.replace("_amqp", " through RabbitMQ"), _get(ctx.r, "ceiling", name, default={}), "-")
        for name in ("relay", "relay_amqp")
    ]
    runs += [
        (f"socketio x{p['servers']}", p["throughput"], "-")
        for p in _get(ctx.r, "peer", "runs", default=[])
    ]
    return runs


CPU_TABLE = Table(
    _cpu_runs,
    [
        ("gateways", lambda x: x[0]),
        ("server-side CPU", lambda x: _cpu(x[1])),
        ("load generator CPU", lambda x: _f(x[1].get("generator_cpu_pct"), 0) + "%"),
        num("ack p50 ms", 1, "ack_latency_ms", "p50", nd=1),
        ("history backlog drain s", lambda x: x[2]),
    ],
)


def _latency_runs(ctx: Ctx) -> list[tuple[str, dict[str, Any], bool]]:
    """(label, run, ours): the chat's fixed-rate runs, then the peer's and the bare relay's."""
    others = [
        (f"socketio x{p['servers']}", x)
        for p in _get(ctx.r, "peer", "runs", default=[])
        for x in p.get("latency", [])
    ]
    others += [
        ("bare relay through RabbitMQ, 1 process", x)
        for x in _get(ctx.r, "ceiling", "relay_amqp", "latency", default=[])
    ]
    return [(_f(x["offered_rate"]), x, True) for x in ctx.s["latency"]] + [
        (f"{_f(x['offered_rate'])} ({name})", x, False) for name, x in others
    ]


def _ours(cell: Callable[[dict[str, Any]], str]) -> Callable[[Any], str]:
    """A cell only the chat's own runs fill ("-" for the others)."""
    return lambda run: cell(run[1]) if run[2] else "-"


def _lag(x: dict[str, Any]) -> str:
    lag = _get(x, "history", "write_lag_ms")
    return _f(_get(lag, "p50"), 0) + " / " + _f(_get(lag, "p99"), 0)


LATENCY_TABLE = Table(
    _latency_runs,
    [
        ("offered msg/s", lambda run: run[0]),
        num("delivered msg/s", 1, "delivered_rate"),
        num("p50 ms", 1, "latency_ms", "p50", nd=1),
        num("p99 ms", 1, "latency_ms", "p99", nd=1),
        num("p99.9 ms", 1, "latency_ms", "p999", nd=1),
        num("max ms", 1, "latency_ms", "max", nd=1),
        num("ack p99 ms", 1, "ack_latency_ms", "p99", nd=1),
        ("missing / errors", lambda run: f"{run[1]['missing']} / {sum(run[1]['errors'].values())}"),
        ("history lag p50 / p99 ms", _ours(_lag)),
        ("history rows/s", _ours(lambda x: _f(_get(x, "history", "write_rate"), 0))),
        ("CPU", _ours(_cpu)),
    ],
)


def _pcts(d: dict[str, Any], *keys: str) -> str:
    return " / ".join(_f(d[k], 1) for k in keys)


FANOUT_TABLE = Table(
    lambda ctx: [ctx.s["fanout"]],
    [
        ("members", lambda fo: fo["members"]),
        ("messages @ rate", lambda fo: f"{fo['messages']} @ {_f(fo['rate'])}/s"),
        ("complete", lambda fo: f"{fo['complete']}/{fo['messages']}"),
        (
            "send→last member p50 / p99 / max ms",
            lambda fo: _pcts(fo["last_member_latency_ms"], "p50", "p99", "max"),
        ),
        (
            "per delivery p50 / p99 ms",
            lambda fo: _pcts(fo["per_delivery_latency_ms"], "p50", "p99"),
        ),
        num("deliveries/s", "deliveries_per_s"),
        ("CPU", _cpu),
    ],
)


def _idle_steps(ctx: Ctx) -> list[tuple[str, dict[str, Any]]]:
    """(what is measured, step) of both idle runs."""
    deflate = ctx.s.get("idle_deflate") or {"steps": []}
    z = " (permessage-deflate, another gateway)"
    return [("", x) for x in ctx.s["idle"]["steps"]] + [(z, x) for x in deflate["steps"]]


IDLE_TABLE = Table(
    _idle_steps,
    [
        ("sockets", lambda z: _f(z[1]["sockets"]) + z[0]),
        num("RSS before MiB", 1, "gateway_rss_base_kib", nd=1, div=1024),
        num("RSS MiB", 1, "gateway_rss_kib", nd=1, div=1024),
        num("KiB / socket", 1, "kib_per_socket", nd=1),
        num("connects/s", 1, "connect_rate_per_s"),
        num("generator KiB / socket", 1, "generator_kib_per_socket", nd=1),
        ("failures", lambda z: z[1]["failures"]),
    ],
)


def _idle_after(ctx: Ctx) -> str:
    idle = ctx.s["idle"]
    return (
        f"\nAll {idle['open_at_end']} sockets still open at the end; gateway alive: "
        f"{idle.get('gateway_alive_after')}.\n"
    )


def _history_runs(ctx: Ctx) -> list[tuple[str, Any, dict[str, Any] | None, str]]:
    """(run, rows/s, lag percentiles or None, the metric's p99 bucket) of every writer run."""
    runs: list[tuple[str, Any, dict[str, Any] | None, str]] = []
    for x in ctx.s.get("latency", []):
        hh = x.get("history", {})
        bucket = f"le {_f(_get(hh, 'metric', 'p99_le_s'), 3)} s"
        label = f"in the cluster at {_f(x['offered_rate'])} msg/s offered"
        runs.append((label, hh.get("write_rate"), hh.get("write_lag_ms") or {}, bucket))
    h = ctx.r.get("history")
    if h and not h.get("error"):
        script = "bench/history_writer.py"
        live = f"{script} {' '.join(h['args'])} (live, publisher as fast as it can)"
        runs.append((live, h.get("live_rate"), h.get("live_lag_ms") or {}, "-"))
        for x in h.get("paced", []):
            paced = f"{script} paced {_f(x['rate'])} msg/s (writer alone, no gateways)"
            runs.append((paced, x["rate"], x["lag_ms"], "-"))
        backlog = f"{script} backlog drain (writer alone)"
        runs.append((backlog, h.get("backlog_drain_rate"), None, "-"))
    return runs


def _history_failed(ctx: Ctx) -> str:
    h = ctx.r.get("history")
    if h and h.get("error"):
        return f"bench/history_writer.py failed: {h.get('error', '')[:500]}\n\n"
    return ""


def _lag_col(head: str, k: str) -> Col:
    return head, lambda run: "-" if run[2] is None else _f(_get(run[2], k))


HISTORY_TABLE = Table(
    _history_runs,
    [
        ("run", lambda run: run[0]),
        num("rows/s written", 1),
        _lag_col("lag p50 ms", "p50"),
        _lag_col("lag p99 ms", "p99"),
        _lag_col("lag max ms", "max"),
        ("chat_history_write_lag_seconds p99 bucket", lambda run: run[3]),
    ],
)


def _argon2(lg: dict[str, Any]) -> str:
    return ", ".join(str(lg["argon2"][k]) for k in ("time_cost", "memory_kib", "parallelism"))


LOGIN_TABLE = Table(
    lambda ctx: [ctx.s["login"]],
    [
        num("logins/s", "logins_per_s", nd=1),
        (
            "latency p50 / p99 ms",
            lambda lg: " / ".join(_f(lg["latency_ms"][k]) for k in ("p50", "p99")),
        ),
        ("concurrency", lambda lg: lg["concurrency"]),
        ("argon2 (t, m KiB, p)", _argon2),
        num("one verify ms", "argon2", "verify_ms", nd=1),
        num("bound: cores / verify", "argon2", "bound_logins_per_s", nd=1),
        (
            "ratio to bound",
            lambda lg: _f(_ratio(lg["logins_per_s"], lg["argon2"]["bound_logins_per_s"]), 2),
        ),
        ("auth CPU", _cpu),
    ],
)


def _samples(head: str, *path: str, top: int) -> Table:
    """The first ``top`` (frame, % of samples) rows of a py-spy summary."""
    return Table(
        lambda ctx: _get(ctx.s, "profile", *path, default=[])[:top],
        [(head, lambda x: x["frame"]), ("% of samples", lambda x: x["pct"])],
    )


def _profile_heading(ctx: Ctx) -> str:
    prof = ctx.s["profile"]
    return (
        f"\n## Gateway profile (py-spy, {prof['seconds']} s at "
        f"{_f(prof['load_delivered_rate'])} msg/s, "
        f"1 gateway closed loop; [{prof['svg']}]({prof['svg']}))\n\n"
    )


def _history_profile_intro(ctx: Ctx) -> str:
    hp = ctx.s["profile"]["history"]
    return (
        f"\nThe history writer at the same time ({hp.get('cpu_pct_of_one_core')}% of a "
        f"core; [{hp['raw']}]({hp['raw']})):\n\n"
    )


def _ms(d: dict[str, Any] | None, *keys: str) -> str:
    return " / ".join(_f((d or {}).get(k), 0) for k in keys)


BIGROOM_TABLE = Table(
    lambda ctx: [ctx.r["bigroom"]],
    [
        ("members / online", lambda b: f"{_f(_get(b, 'create', 'members'))} / {_f(b['online'])}"),
        ("create s", lambda b: _f(_get(b, "create", "server_ms", default=0) / 1000, 1)),
        ("change server ms p50 / p99", lambda b: _ms(_get(b, "joins", "server"), "p50", "p99")),
        (
            "change → all told ms p50 / p99",
            lambda b: _ms(_get(b, "joins", "all_members_told"), "p50", "p99"),
        ),
        num("bytes / member / change", "joins", "bytes_per_member_per_change", "mean"),
        num("+ notice bytes", "joins", "notice_bytes_per_member_per_change", "mean"),
        (
            "message → last member ms p50 / p99",
            lambda b: _ms(_get(b, "fanout", "send_to_last_member"), "p50", "p99"),
        ),
        (
            "connect with rooms: ready cold / synced cold / ready warm ms (p50)",
            lambda b: (
                f"{_f(_get(b, 'connect', 'rooms'))} rooms: "
                f"{_f(_get(b, 'connect', 'cold', 'p50'))} / "
                f"{_f(_get(b, 'connect', 'cold_synced', 'p50'))} / "
                f"{_f(_get(b, 'connect', 'warm', 'p50'))}"
            ),
        ),
    ],
)

MEMBUS_TABLE = Table(
    lambda ctx: ctx.r["membus"]["runs"],
    [
        num("bindings", "bindings"),
        num("publishes/s", "publishes_per_s"),
        num("µs / publish", "publish_us", nd=1),
        num("the old scan: µs / publish", "scan_route_us", nd=1),
    ],
)

HSCALE_TABLE = Table(
    lambda ctx: ctx.r["history_scale"]["runs"],
    [
        num("shards = writers", "shards"),
        num("drain msg/s", "drain_rate"),
        num("writers ms CPU / msg", "cpu_ms_per_msg", "writers", nd=3),
        num("MariaDB", "cpu_ms_per_msg", "mysql", nd=3),
        num("RabbitMQ", "cpu_ms_per_msg", "rabbitmq", nd=3),
        num("total", "cpu_ms_per_msg_total", nd=3),
    ],
)


def _hscale_ratio(ctx: Ctx) -> str:
    h = ctx.r["history_scale"]
    return (
        f"\n2 writers / 1 writer: **{_f(h.get('ratio_2_over_1'), 2)}**; 4 / 1: "
        f"{_f(h.get('ratio_4_over_1'), 2)} (target ≥ 1.6 where MariaDB is not the limit; on "
        f"{h.get('cpus')} cores the machine's CPU is the limit: see scale-out.md).\n"
    )


def _search_rows(ctx: Ctx) -> list[dict[str, Any]]:
    s = ctx.r["search"]
    return [{"kind": k, **v} for k, v in s["http_by_kind"].items()] + [{"kind": "all", **s["http"]}]


SEARCH_TABLE = Table(
    _search_rows,
    [
        ("queries", lambda rec: str(rec["kind"])),
        num("n", "n"),
        num("p50 ms", "p50", nd=1),
        num("p90 ms", "p90", nd=1),
        num("p99 ms", "p99", nd=1),
        num("max ms", "max", nd=1),
    ],
)


def _search_intro(ctx: Ctx) -> str:
    s = ctx.r["search"]
    c = s["config"]
    return (
        f"\n`GET /api/search` over HTTP, one query at a time, on {c['messages']:,} messages "
        f"({c['rooms']:,} rooms, {c['users']:,} users; bench/search.py; load average "
        f"{s['loadavg_before_queries'][0]}): p99 **{_f(s['http']['p99'], 1)} ms** "
        f"(target ≤ 100 ms: {'met' if s['met'] else 'missed'}; see search.md).\n\n"
    )


DOCUMENT = [
    Section(None, [_header]),
    Section("Targets (issue 8)", [TARGETS_TABLE]),
    Section(
        "Throughput: ours vs ceilings and the peer (msg/s delivered)",
        [Table(_throughput_rows, heads=["system", "msg/s", "ratio to raw aio-pika (confirms)"])],
    ),
    Section(
        None,
        [
            "\nCPU during the closed-loop runs (% of one core, from /proc/<pid>/stat; rabbitmq "
            "and mysql are the shared servers, other tenants included; machine: all cores, every "
            "tenant, and /proc/pressure/cpu 'some', the share of time a runnable task waited):\n\n",
            CPU_TABLE,
        ],
        when=lambda ctx: ctx.s.get("throughput"),
    ),
    Section(
        "CPU cost per delivered message (ms of CPU; far less sensitive to the other tenants "
        "than rates are)",
        [
            Table(
                lambda ctx: cost_rows(ctx.r),
                heads=["system (closed-loop run)", "ms CPU / message", "ratio"],
            )
        ],
    ),
    Section(
        "Latency at fixed rates (3 gateways, sender and receiver on different gateways)",
        [LATENCY_TABLE],
        when=lambda ctx: ctx.s.get("latency"),
    ),
    Section(
        "Fan-out (one sender, a group spread over 3 gateways)",
        [FANOUT_TABLE],
        when=lambda ctx: ctx.s.get("fanout"),
    ),
    Section(
        "Idle sockets on one gateway process (RSS from /proc/<pid>/status)",
        [IDLE_TABLE, _idle_after],
        when=lambda ctx: ctx.s.get("idle"),
    ),
    Section("History writer", [_history_failed, HISTORY_TABLE]),
    Section(
        "Login rate (gunicorn auth, argon2id)", [LOGIN_TABLE], when=lambda ctx: ctx.s.get("login")
    ),
    Section(
        "A big room (issue 13: one group, many members online, 3 gateways)",
        [BIGROOM_TABLE],
        when=lambda ctx: _get(ctx.r, "bigroom", "joins"),
    ),
    Section(
        "The in-process bus with few and many bindings (all-in-one mode)",
        [MEMBUS_TABLE],
        when=lambda ctx: _get(ctx.r, "membus", "runs"),
    ),
    Section(
        "History scale-out (issue 14: backlog drain, N shards and N writers)",
        [HSCALE_TABLE, _hscale_ratio],
        when=lambda ctx: _get(ctx.r, "history_scale", "runs"),
    ),
    Section(
        "Search (issue 17: p99 ≤ 100 ms on a million messages)",
        [_search_intro, SEARCH_TABLE],
        when=lambda ctx: _get(ctx.r, "search", "http"),
    ),
    Section(
        None,
        [
            _profile_heading,
            _samples("frame (self time)", "top_self", top=12),
            "\n",
            _samples("package / module (self time)", "by_package_self", top=10),
        ],
        when=lambda ctx: _get(ctx.s, "profile", "top_self"),
    ),
    Section(
        None,
        [
            _history_profile_intro,
            _samples("frame (self time)", "history", "top_self", top=8),
            "\n",
            _samples("package / module (self time)", "history", "by_package_self", top=8),
        ],
        when=lambda ctx: (
            _get(ctx.s, "profile", "top_self") and _get(ctx.s, "profile", "history", "top_self")
        ),
    ),
    Section(
        None,
        [
            "\nPlots: [throughput](throughput_vs_gateways.png), [latency](latency_vs_rate.png), "
            "[memory](memory_per_connection.png). Raw numbers: results.json.\n"
        ],
    ),
]


def markdown(r: dict[str, Any]) -> str:
    return render(DOCUMENT, Ctx(r))


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
