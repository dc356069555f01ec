"""Search latency on a million messages (issue 17: p99 <= 100 ms), on the local MariaDB.

    python -m bench.search                          # 1,000,000 messages, 300 queries
    python -m bench.search --messages 20000 --queries 40 --json   # a smoke size

A scratch database (tools/scratch.py; dropped at the end unless ``--keep``) gets the production
schema (``python -m services migrate``), then a generated history loaded in bulk: ``--rooms``
rooms whose activity follows a Zipf law, ``--users`` users each in 100-500 rooms (busier rooms
having more members), ``--messages`` messages over the last 365 days, 1-40 words each (mean
~9) drawn from a Zipf law (s=1.05) over a 30,000-word vocabulary whose head is real English
chat words (``the``, ``meeting``, ``deploy``...), with one message in ten in Vietnamese with its
diacritics. The messages and their search documents (services/history/searchtext.py) are
loaded with ``LOAD DATA``, and the FULLTEXT index built afterwards with the migration's own
statement (a bulk build; the writer maintains it row by row in production).

The queries go through the HTTP API as a client's would: ``GET /api/search`` on a history
process of its own (``python -m services history``, uvicorn, with a scratch RabbitMQ vhost for
its writer), one at a time, with a bearer token of a random user: common words (Zipf rank
1-50), middling ones (50-2,000), rare ones (2,000-30,000), two-word queries and Vietnamese
words (with and without diacritics), a third of them limited to one of the user's rooms
(``room=``). A warm-up of 30 other queries first. Then the same queries in-process
(services/history/search.py) to say which step of the planner answered each.

Prints a report (and with ``--json`` a JSON line last: what bench/run.py reads).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench.common import (
    PYTHON,
    ROOT,
    amqp_url,
    cpu_seconds,
    create_vhost,
    delete_vhost,
    log,
    machine,
    pct,
    stop_proc,
)
from services.common.ids import message_id, new_id, now_ms
from services.common.models import MYSQL_SEARCH_DDL
from services.common.settings import Settings
from services.common.tokens import issue_access
from services.history.searchtext import index_text
from tools import scratch
from tools.cluster import free_port, wait_http

SECRET = "bench-search-" + "s" * 40
DAY_MS = 24 * 3600 * 1000

# the head of the vocabulary: real words, most frequent first (chat English)
COMMON = (
    "the i to you a and it is that for we on this in of be have can with will do not are "
    "just so but what if me my at know think get it's there was like all about yes no ok "
    "thanks please now up out one time good see when how today they he she meeting deploy "
    "release review fix bug test build team call tomorrow week lunch project update issue "
    "server data design customer report question idea plan docs code change merge branch "
    "ticket sprint demo client deadline budget email slack morning afternoon friday monday "
    "coffee weekend office remote laptop screen share link file folder access password login "
    "error crash slow fast latency database cache queue broker gateway history search index "
    "query schema migration rollback backup restore monitor alert incident outage postmortem"
).split()
VIETNAMESE = (
    "xin chào các bạn tôi là không có được người này những một và của cho với đi ăn làm việc "
    "hôm nay ngày mai anh em chị vui buồn nhà công ty dự án họp tuần sau trước cảm ơn nhiều "
    "rất tốt đẹp quá nhé nhỉ vâng dạ ừ được rồi bây giờ lúc nào ở đâu tại sao thế nào phở "
    "cà phê sáng trưa chiều tối Hà Nội Sài Gòn Đà Nẵng gửi báo cáo kiểm tra lỗi sửa xong"
).split()
SYLLABLES = (
    "ba be bi bo bu da de di do du ka ke ki ko ku la le li lo lu ma me mi mo mu na ne ni no "
    "nu pa pe pi po pu ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo vu an en in "
    "on un ar er ir or ur st tr pl gr"
).split()


def vocabulary(size: int, rng: random.Random) -> list[str]:
    words = list(dict.fromkeys(COMMON))
    seen = set(words)
    while len(words) < size:
        # tail words are longer, like a language's rare words
        n = 2 + min(4, int(rng.expovariate(0.9)))
        w = "".join(rng.choice(SYLLABLES) for _ in range(n))
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words


def generate(
    args: argparse.Namespace, directory: Path, *, facts_only: bool = False
) -> dict[str, Any]:
    """TSV files for users, rooms, memberships, messages and message_search; the facts the
    queries are drawn from (the same for the same seed: ``facts_only`` skips the files)."""
    rng = random.Random(args.seed)
    nrng = np.random.default_rng(args.seed)
    vocab = vocabulary(args.vocab, rng)
    zipf = 1.0 / np.arange(1, len(vocab) + 1) ** 1.05
    zipf /= zipf.sum()
    alphabet = "0123456789abcdefghjkmnpqrstvwxyz"

    def ident() -> str:  # 26 characters like ids.new_id(), but from the seed: reproducible
        return "".join(rng.choice(alphabet) for _ in range(26))

    rooms = [ident() for _ in range(args.rooms)]
    activity = 1.0 / np.arange(1, args.rooms + 1) ** 0.8
    activity /= activity.sum()
    users = [(ident(), f"user{i:05d}") for i in range(args.users)]
    membership: dict[str, list[str]] = {}
    appeal = np.sqrt(activity)
    appeal /= appeal.sum()
    members_of: dict[str, list[tuple[str, str]]] = {r: [] for r in rooms}
    for uid, name in users:
        k = min(args.rooms, int(nrng.integers(100, 501)))
        chosen = nrng.choice(args.rooms, size=k, replace=False, p=appeal)
        membership[uid] = [rooms[i] for i in chosen]
        for i in chosen:
            members_of[rooms[i]].append((uid, name))
    facts = {"vocab": vocab, "membership": membership, "users": users, "rooms": rooms}
    if facts_only:
        return facts
    with open(directory / "users.tsv", "w") as f:
        for uid, name in users:
            f.write(f"{uid}\t{name}\tx\t0\t1\n")
    with open(directory / "rooms.tsv", "w") as f:
        for r in rooms:
            f.write(f"{r}\tgroup\t{r[-6:]}\t0\t0\t1\t{len(members_of[r])}\n")
    with open(directory / "memberships.tsv", "w") as f:
        for r, ms in members_of.items():
            for uid, name in ms:
                f.write(f"{r}\t{uid}\t{name}\t0\n")
    now = now_ms()
    lengths = np.clip(nrng.geometric(0.11, args.messages), 1, 40)
    tokens = nrng.choice(len(vocab), int(lengths.sum()), p=zipf)
    room_of = nrng.choice(args.rooms, args.messages, p=activity)
    sent = np.sort(nrng.integers(now - 365 * DAY_MS, now - 1000, args.messages))
    pos = 0
    rows: list[str] = []  # messages, written in primary-key order (a random id: a bulk load in
    # id order writes the B-tree once instead of splitting pages all over a small buffer pool)
    with open(directory / "search.tsv", "w") as fs:  # documents in time order, as written
        for i in range(args.messages):
            n = int(lengths[i])
            if rng.random() < 0.1:
                body = " ".join(rng.choice(VIETNAMESE) for _ in range(min(n, 12)))
                body = body[0].upper() + body[1:]
            else:
                body = " ".join(vocab[t] for t in tokens[pos : pos + n])
            pos += n
            room = rooms[int(room_of[i])]
            people = members_of[room] or [users[0]]
            uid, name = people[rng.randrange(len(people))]
            cmid = f"b{i}"
            mid = message_id(uid, cmid)
            ms = int(sent[i])
            rows.append(f"{mid}\t{room}\t{uid}\t{name}\t{body}\t{ms}\t{cmid}\t{ms}\ttext\t0\n")
            words = index_text(body)
            if words:
                fs.write(f"{mid}\t{room}\t{ms}\t{words}\n")
            if i and i % 200_000 == 0:
                log(f"generated {i} messages")
    rows.sort()
    with open(directory / "messages.tsv", "w") as fm:
        fm.writelines(rows)
    return facts


def load(db: str, directory: Path) -> None:
    """Bulk load (foreign keys checked by the data's construction), then the FULLTEXT index
    built as the migration builds it."""
    import pymysql

    conn = pymysql.connect(
        host=scratch_host()["host"],
        port=scratch_host()["port"],
        user="root",
        database=db,
        autocommit=True,
        local_infile=True,
    )
    try:
        with conn.cursor() as cur:
            cur.execute("SET foreign_key_checks = 0, unique_checks = 0")
            cur.execute("DROP INDEX ft_message_search_text ON message_search")
            for table, cols in (
                ("users", "id, username, password_hash, created_ms, membership_seq"),
                ("rooms", "id, kind, name, created_ms, last_activity_ms, version, member_count"),
                ("memberships", "room_id, user_id, username, joined_ms"),
                (
                    "messages",
                    "id, room_id, sender_id, sender, body, sent_ms, client_msg_id, written_ms, "
                    "kind, deleted",
                ),
                ("message_search", "message_id, room_id, sent_ms, text"),
            ):
                t0 = time.monotonic()
                name = "search" if table == "message_search" else table
                cur.execute(
                    f"LOAD DATA LOCAL INFILE '{directory / (name + '.tsv')}' "
                    f"INTO TABLE {table} CHARACTER SET utf8mb4 ({cols})"
                )
                log(f"loaded {table} in {time.monotonic() - t0:.0f}s")
            t0 = time.monotonic()
            for statement in MYSQL_SEARCH_DDL:
                cur.execute(statement)
            log(f"built the FULLTEXT index in {time.monotonic() - t0:.0f}s")
            for table in ("memberships", "messages", "message_search"):
                cur.execute(f"ANALYZE TABLE {table}")
                cur.fetchall()
    finally:
        conn.close()


def scratch_host() -> dict[str, Any]:
    from bench.common import MYSQL_HOST, MYSQL_PORT

    return {"host": SERVER.get("host", MYSQL_HOST), "port": SERVER.get("port", MYSQL_PORT)}


def queries(
    args: argparse.Namespace, facts: dict[str, Any], n: int, seed: int
) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    vocab, users = facts["vocab"], facts["users"]
    vn = ["chào", "chao", "bạn", "dự án", "cảm ơn", "đi ăn", "báo cáo", "Đà Nẵng", "phở", "họp"]
    out = []
    for _ in range(n):
        uid, name = users[rng.randrange(len(users))]
        r = rng.random()
        if r < 0.30:
            kind, q = "common", vocab[rng.randrange(0, 50)]
        elif r < 0.60:
            kind, q = "middling", vocab[rng.randrange(50, 2000)]
        elif r < 0.85:
            kind, q = "rare", vocab[rng.randrange(2000, len(vocab))]
        elif r < 0.95:
            kind, q = (
                "two_words",
                f"{vocab[rng.randrange(0, 200)]} {vocab[rng.randrange(200, 3000)]}",
            )
        else:
            kind, q = "vietnamese", rng.choice(vn)
        room = rng.choice(facts["membership"][uid]) if rng.random() < 1 / 3 else None
        out.append({"user": uid, "username": name, "q": q, "kind": kind, "room": room})
    return out


def measure(base: str, qs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    settings = Settings(jwt_secret=SECRET)
    tokens: dict[str, str] = {}
    results = []
    with httpx.Client(base_url=base, timeout=60) as http:
        for item in qs:
            tok = tokens.get(item["user"])
            if tok is None:
                tok = tokens[item["user"]] = issue_access(
                    settings, item["user"], item["username"], new_id()
                )[0]
            params = {"q": item["q"], "limit": "20"}
            if item["room"]:
                params["room"] = item["room"]
            t0 = time.perf_counter()
            resp = http.get(
                "/api/search", params=params, headers={"Authorization": f"Bearer {tok}"}
            )
            ms = (time.perf_counter() - t0) * 1000
            if resp.status_code != 200:
                raise RuntimeError(
                    f"search {params} answered {resp.status_code}: {resp.text[:300]}"
                )
            results.append({**item, "ms": ms, "found": len(resp.json()["messages"])})
    return results


def steps(db_url: str, qs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same queries in-process: which planner step answered, and its time."""
    from services.history import search as searching
    from services.history.searchtext import parse_query
    from services.history.store import history_engine

    engine = history_engine(db_url)
    out = []
    try:
        for item in qs:
            t0 = time.perf_counter()
            page = searching.search(
                engine, item["user"], parse_query(item["q"]), room=item["room"], limit=20
            )
            out.append({"ms": (time.perf_counter() - t0) * 1000, "steps": page.steps})
    finally:
        engine.dispose()
    return out


def summarize(values: list[float]) -> dict[str, Any]:
    v = sorted(values)
    return {
        "n": len(v),
        "p50": round(pct(v, 50) or 0, 1),
        "p90": round(pct(v, 90) or 0, 1),
        "p99": round(pct(v, 99) or 0, 1),
        "max": round(v[-1], 1) if v else None,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "machine": machine(),
        "command": "python -m bench.search " + " ".join(sys.argv[1:]),
        "config": {k: v for k, v in vars(args).items() if k not in ("json", "keep", "database")},
    }
    private = None
    if args.private_buffer_pool:  # a server of its own, with the memory the data needs
        from tests.support.private_mariadb import PrivateMariaDB

        private = PrivateMariaDB(buffer_pool=args.private_buffer_pool)
        private.install()
        private.start()
        assert private.proc is not None
        SERVER.update(host="127.0.0.1", port=private.port, pid=private.proc.pid)
        out["server"] = f"private mariadbd, innodb_buffer_pool_size={args.private_buffer_pool}"
    else:
        out["server"] = "the shared MariaDB (its own configuration)"
    try:
        return _run(args, out)
    finally:
        if private is not None:
            private.cleanup()


SERVER: dict[str, Any] = {}


def _run(args: argparse.Namespace, out: dict[str, Any]) -> dict[str, Any]:
    server = scratch_host()
    reuse = args.database is not None
    db = args.database or scratch.create_database("bench_search", **server)
    vhost = create_vhost("bench_search")
    db_url = f"mysql://root@{server['host']}:{server['port']}/{db}"
    proc: subprocess.Popen[bytes] | None = None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    try:
        env.update(
            CHAT_DATABASE_URL=db_url,
            CHAT_BROKER_URL=amqp_url(vhost),
            CHAT_JWT_SECRET=SECRET,
            CHAT_LOG_LEVEL="WARNING",
        )
        if reuse:  # a database kept by an earlier run with the same sizes and seed
            facts = generate(args, Path("."), facts_only=True)
            out["generate_s"] = out["load_s"] = 0.0
        else:
            subprocess.run([PYTHON, "-m", "services", "migrate"], cwd=ROOT, env=env, check=True)
            with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
                t0 = time.monotonic()
                facts = generate(args, Path(tmp))
                out["generate_s"] = round(time.monotonic() - t0, 1)
                log(f"generated in {out['generate_s']}s; loading")
                t0 = time.monotonic()
                load(db, Path(tmp))
                out["load_s"] = round(time.monotonic() - t0, 1)
        visible = [
            int(
                scratch_rows(
                    db,
                    "SELECT COUNT(*) FROM memberships ms JOIN message_search s "
                    "ON s.room_id = ms.room_id WHERE ms.user_id = %s",
                    (uid,),
                )
            )
            for uid, _ in facts["users"][:5]
        ]
        out["documents_visible_to_5_users"] = visible
        port = free_port()
        env.update(CHAT_TARGET="history", CHAT_PORT=str(port), CHAT_GATEWAY_ID="bench-search")
        proc = subprocess.Popen([PYTHON, "-m", "services", "history"], cwd=ROOT, env=env)
        wait_http(f"http://127.0.0.1:{port}/readyz", 60, proc)
        base = f"http://127.0.0.1:{port}"
        log("warming up")
        measure(base, queries(args, facts, 30, args.seed + 1))
        qs = queries(args, facts, args.queries, args.seed + 2)
        out["loadavg_before_queries"] = [round(x, 2) for x in os.getloadavg()]
        t0 = time.monotonic()
        cpu0 = {"history": cpu_seconds(proc.pid), "mariadbd": cpu_seconds(SERVER.get("pid", 0))}
        results = measure(base, qs)
        out["queries_s"] = round(time.monotonic() - t0, 1)
        # CPU per query, whatever the other tenants' load: the history process always; the
        # database only when it is a private server (the shared one serves others too)
        out["cpu_ms_per_query"] = {
            "history": round((cpu_seconds(proc.pid) - cpu0["history"]) * 1000 / len(qs), 2),
            "mariadbd": round(
                (cpu_seconds(SERVER.get("pid", 0)) - cpu0["mariadbd"]) * 1000 / len(qs), 2
            )
            if "pid" in SERVER
            else None,
        }
        out["loadavg_after_queries"] = [round(x, 2) for x in os.getloadavg()]
        out["http"] = summarize([r["ms"] for r in results])
        by: dict[str, list[float]] = {}
        for r in results:
            by.setdefault(r["kind"], []).append(r["ms"])
            by.setdefault("with_room" if r["room"] else "all_rooms", []).append(r["ms"])
        out["http_by_kind"] = {k: summarize(v) for k, v in sorted(by.items())}
        out["empty_results"] = sum(1 for r in results if r["found"] == 0)
        inproc = steps(db_url, qs)
        out["in_process"] = summarize([s["ms"] for s in inproc])
        final: dict[str, list[float]] = {}
        for s in inproc:
            final.setdefault(s["steps"][-1].split(":")[0] if s["steps"] else "none", []).append(
                s["ms"]
            )
        out["in_process_by_final_step"] = {k: summarize(v) for k, v in sorted(final.items())}
        slowest = sorted(zip(results, inproc, strict=True), key=lambda x: -x[0]["ms"])[:5]
        out["slowest"] = [
            {
                "q": r["q"],
                "kind": r["kind"],
                "room": bool(r["room"]),
                "ms": round(r["ms"], 1),
                "steps": list(s["steps"]),
            }
            for r, s in slowest
        ]
        out["target_p99_ms"] = 100
        out["met"] = out["http"]["p99"] <= 100
    finally:
        if proc is not None:
            stop_proc(proc)
        if args.keep or reuse:
            log(f"kept database {db}")
        else:
            scratch.drop_database(db, **server)
        delete_vhost(vhost)
    return out


def scratch_rows(db: str, sql: str, params: tuple[Any, ...]) -> Any:
    import pymysql

    conn = pymysql.connect(user="root", database=db, autocommit=True, **scratch_host())
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchone()[0]
    finally:
        conn.close()


def report(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"machine: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB, python {platform.python_version()}",
        f"command: {r['command']}",
        f"database server: {r['server']}",
        f"data: {r['config']['messages']} messages, {r['config']['rooms']} rooms, "
        f"{r['config']['users']} users; generated in {r['generate_s']}s, loaded in {r['load_s']}s",
        f"documents visible to 5 users: {r['documents_visible_to_5_users']}",
        f"load average before/after the queries: {r['loadavg_before_queries']} / "
        f"{r['loadavg_after_queries']}",
        f"HTTP GET /api/search, {r['http']['n']} queries one at a time: "
        f"p50 {r['http']['p50']} ms, p90 {r['http']['p90']} ms, p99 {r['http']['p99']} ms, "
        f"max {r['http']['max']} ms (target p99 <= 100 ms: {'met' if r['met'] else 'MISSED'})",
    ]
    for k, v in r["http_by_kind"].items():
        lines.append(
            f"  {k:>10}: n={v['n']} p50 {v['p50']} p90 {v['p90']} p99 {v['p99']} max {v['max']}"
        )
    lines.append(f"CPU per query (ms, mean over the HTTP pass): {r['cpu_ms_per_query']}")
    lines.append(
        f"in-process (the query function): p50 {r['in_process']['p50']} p99 {r['in_process']['p99']}"
    )
    for k, v in r["in_process_by_final_step"].items():
        lines.append(
            f"  answered by {k:>9}: n={v['n']} p50 {v['p50']} p99 {v['p99']} max {v['max']}"
        )
    lines.append(f"empty results: {r['empty_results']}")
    for s in r["slowest"]:
        lines.append(f"  slow: {s}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--messages", type=int, default=1_000_000)
    ap.add_argument("--rooms", type=int, default=10_000)
    ap.add_argument("--users", type=int, default=3_000)
    ap.add_argument("--vocab", type=int, default=30_000)
    ap.add_argument("--queries", type=int, default=300)
    ap.add_argument("--seed", type=int, default=17)
    ap.add_argument("--keep", action="store_true", help="keep the scratch database")
    ap.add_argument(
        "--database", help="reuse a database kept by an earlier run (same sizes and seed)"
    )
    ap.add_argument(
        "--private-buffer-pool",
        metavar="SIZE",
        help="run on a private mariadbd (own datadir, tests/support/private_mariadb.py) with "
        "this innodb_buffer_pool_size (e.g. 1G) instead of the shared server",
    )
    ap.add_argument("--json", action="store_true", help="print the results as a JSON line last")
    args = ap.parse_args()
    if args.rooms < 100:
        raise SystemExit("--rooms must be at least 100 (users join 100-500 rooms)")
    result = run(args)
    print(report(result), file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
