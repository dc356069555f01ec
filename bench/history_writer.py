"""Measure the history writer on the real RabbitMQ and MariaDB.

    .venv/bin/python bench/history_writer.py --messages 20000

Creates its own vhost and database (tools/scratch.py; dropped at the end), migrates it, runs the
writer as its own process (``python -m services history``, as in production) and publishes messages
to ``chat.messages`` with publisher confirms, pipelined, as fast as it can. Two phases:

- live: the writer runs while the messages are published; reports the writer's sustained rate
  (rows / (last commit - first commit)) and the write lag (commit - sent_ms) p50/p90/p99/max,
  read back from the rows (``written_ms - sent_ms``);
- paced: messages published at a steady rate (``--rates``, ``--paced-s`` each, 5 s by
  default), the lag at that load;
- backlog: the messages are published with the writer stopped, then it is started: the drain
  rate is the writer's ceiling with no publisher competing for the CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from sqlalchemy import func, select

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import PYTHON, cpu_seconds, free_port, wait_http  # noqa: E402
from services.common import topology  # noqa: E402
from services.common.bus import create_bus  # noqa: E402
from services.common.db import make_engine  # noqa: E402
from services.common.ids import iso_ms, message_id, now_ms  # noqa: E402
from services.common.models import Message  # noqa: E402
from tools import scratch  # noqa: E402


def wire(room: str, sender_id: str, cmid: str, body: str, shards: int) -> tuple[str, bytes]:
    ms = now_ms()
    mid = message_id(sender_id, cmid)
    doc = {
        "type": "message",
        "message": {
            "id": mid,
            "room": room,
            "sender": "bench",
            "body": body,
            "sent_at": iso_ms(ms),
            "client_msg_id": cmid,
        },
        "sender_id": sender_id,
        "sent_ms": ms,
        "origin": {"gw": "bench", "conn": "c"},
    }
    return topology.room_msg_key(room, shards), orjson.dumps(doc)


def writer_env(args: argparse.Namespace, amqp: str, db_url: str, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env.update(
        CHAT_TARGET="history",
        CHAT_DATABASE_URL=db_url,
        CHAT_BROKER_URL=amqp,
        CHAT_JWT_SECRET="bench-" + "x" * 40,
        CHAT_PORT=str(port),
        CHAT_GATEWAY_ID="bench",
        CHAT_LOG_LEVEL="WARNING",
        CHAT_HISTORY_BATCH_SIZE=str(args.batch_size),
        CHAT_HISTORY_BATCH_MS=str(args.batch_ms),
        CHAT_HISTORY_SHARDS=str(args.shards),
    )
    return env


def start_writer(args: argparse.Namespace, amqp: str, db_url: str) -> subprocess.Popen[bytes]:
    """The history target, started as production starts it (tools/cluster.py does the same)."""
    port = free_port()
    env = writer_env(args, amqp, db_url, port)
    proc = subprocess.Popen([PYTHON, "-m", "services", "history"], cwd=ROOT, env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 30, proc)
    except (RuntimeError, TimeoutError) as exc:
        proc.kill()
        raise SystemExit(f"writer did not become ready: {exc}") from None
    return proc


def migrate(args: argparse.Namespace, amqp: str, db_url: str) -> None:
    """The production schema: ``python -m services migrate``."""
    env = writer_env(args, amqp, db_url, 0)
    subprocess.run([PYTHON, "-m", "services", "migrate"], cwd=ROOT, env=env, check=True)


def mysql_server(url: str) -> dict[str, Any]:
    """tools/scratch.py's keywords for the database server of a ``mysql://`` URL."""
    m = urlsplit(url)
    return {
        "host": m.hostname or "127.0.0.1",
        "port": m.port or 3306,
        "user": m.username or "root",
        "password": m.password or "",
    }


def with_path(url: str, name: str) -> str:
    """The server URL ``url`` pointed at vhost or database ``name``."""
    return urlunsplit(urlsplit(url)._replace(path="/" + name))


async def publish(
    amqp: str,
    n: int,
    rooms: int,
    body_len: int,
    tag: str,
    window: int,
    rate: float = 0,
    *,
    shards: int,
) -> float:
    """n confirmed publishes, ``window`` awaiting confirms at once; paced to ``rate``/s if set;
    routed to the ``shards`` history queues as a gateway routes them."""
    bus = create_bus(amqp)
    await bus.connect()
    await bus.declare_history(shards)
    body = "x" * body_len
    t0 = time.perf_counter()
    if rate:
        window = max(1, int(rate * 0.01))  # a tick every 10 ms
    for tick, start in enumerate(range(0, n, window)):
        if rate:
            delay = t0 + tick * window / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        chunk = []
        for i in range(start, min(n, start + window)):
            key, payload = wire(f"room{i % rooms:022d}", "u" * 26, f"{tag}-{i}", body, shards)
            chunk.append(bus.publish(topology.MESSAGES, key, payload, mandatory=True))
        await asyncio.gather(*chunk)
    elapsed = time.perf_counter() - t0
    await bus.close()
    return elapsed


def wait_rows(engine: object, n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    with engine.connect() as conn:  # type: ignore[attr-defined]
        while time.monotonic() < deadline:
            got = conn.scalar(select(func.count()).select_from(Message))
            conn.rollback()
            if got >= n:
                return
            time.sleep(0.1)
    raise SystemExit(f"only {got} of {n} rows after {timeout}s")


def stats(engine: object, tag: str) -> dict[str, float]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        rows = conn.execute(
            select(Message.sent_ms, Message.written_ms).where(
                Message.client_msg_id.like(f"{tag}-%")
            )
        ).all()
    lags = sorted(w - s for s, w in rows)
    first = min(w for _, w in rows)
    last = max(w for _, w in rows)

    def pct(p: float) -> float:
        return float(lags[min(len(lags) - 1, int(p * len(lags)))])

    return {
        "rows": len(rows),
        "rate": len(rows) / max(0.001, (last - first) / 1000),
        "p50": pct(0.50),
        "p90": pct(0.90),
        "p99": pct(0.99),
        "max": float(lags[-1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=20_000)
    ap.add_argument("--rooms", type=int, default=100)
    ap.add_argument("--body", type=int, default=100, help="body length in characters")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--batch-ms", type=int, default=20)
    ap.add_argument("--window", type=int, default=500, help="publishes awaiting confirms at once")
    ap.add_argument(
        "--shards", type=int, default=1, help="history queues (CHAT_HISTORY_SHARDS) of the writer"
    )
    ap.add_argument(
        "--rates", default="500,1000,2000", help="paced phases (msg/s, --paced-s each) for the lag"
    )
    ap.add_argument("--paced-s", type=float, default=5.0, help="length of each paced phase")
    ap.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    ap.add_argument("--mysql", default="mysql://root@127.0.0.1:3306/")
    args = ap.parse_args()

    server = mysql_server(args.mysql)
    vhost = scratch.create_vhost("bench_history", user=urlsplit(args.amqp).username or "guest")
    database = scratch.create_database("bench_history", **server)
    amqp, db_url = with_path(args.amqp, vhost), with_path(args.mysql, database)
    try:
        run(args, amqp, db_url)
    finally:
        scratch.drop_database(database, **server)
        scratch.delete_vhost(vhost)


def run(args: argparse.Namespace, amqp: str, db_url: str) -> None:
    migrate(args, amqp, db_url)
    engine = make_engine(db_url)
    print(
        f"machine: {platform.node()} {os.cpu_count()} cores, "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
    )
    print(
        f"messages={args.messages} rooms={args.rooms} body={args.body} chars "
        f"batch_size={args.batch_size} batch_ms={args.batch_ms} window={args.window} "
        f"shards={args.shards}"
    )
    print("load average at start: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    writer = start_writer(args, amqp, db_url)
    try:
        # live: writer running while we publish as fast as we can
        secs = asyncio.run(
            publish(
                amqp, args.messages, args.rooms, args.body, "live", args.window, shards=args.shards
            )
        )
        print(
            f"live: published {args.messages} confirmed in {secs:.2f}s "
            f"({args.messages / secs:.0f}/s)"
        )
        wait_rows(engine, args.messages, 300)
        s = stats(engine, "live")
        print(
            f"live: writer sustained {s['rate']:.0f} msg/s; write lag ms p50={s['p50']:.0f} "
            f"p90={s['p90']:.0f} p99={s['p99']:.0f} max={s['max']:.0f}"
        )
        # paced: the lag at a steady offered load
        done = args.messages
        for rate in [int(r) for r in args.rates.split(",") if r]:
            n = max(1, int(rate * args.paced_s))
            cpu0 = cpu_seconds(writer.pid)
            secs = asyncio.run(
                publish(
                    amqp,
                    n,
                    args.rooms,
                    args.body,
                    f"rate{rate}",
                    args.window,
                    rate,
                    shards=args.shards,
                )
            )
            done += n
            wait_rows(engine, done, 300)
            cpu_ms = (cpu_seconds(writer.pid) - cpu0) * 1000 / n
            s = stats(engine, f"rate{rate}")
            print(
                f"paced {rate}/s: {n} published in {secs:.2f}s; write lag ms p50={s['p50']:.0f} "
                f"p90={s['p90']:.0f} p99={s['p99']:.0f} max={s['max']:.0f}; "
                f"writer CPU {cpu_ms:.3f} ms/msg"
            )
        writer.terminate()
        writer.wait(30)
        # backlog: publish with no writer, then drain
        secs = asyncio.run(
            publish(
                amqp,
                args.messages,
                args.rooms,
                args.body,
                "backlog",
                args.window,
                shards=args.shards,
            )
        )
        print(
            f"backlog: published {args.messages} confirmed in {secs:.2f}s "
            f"({args.messages / secs:.0f}/s), writer stopped"
        )
        writer = start_writer(args, amqp, db_url)
        wait_rows(engine, done + args.messages, 300)
        s = stats(engine, "backlog")
        print(f"backlog: writer drained at {s['rate']:.0f} msg/s")
        print("load average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))
    finally:
        writer.terminate()
        writer.wait(30)
        engine.dispose()


if __name__ == "__main__":
    main()
