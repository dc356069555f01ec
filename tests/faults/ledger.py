"""Jepsen-style bookkeeping: every send attempt and its answer is recorded; at the end MySQL is
asked what it holds and the two are compared.

A *logical message* is one (sender, client_msg_id). It may take several attempts (an
``unavailable`` error, a lost connection, a timeout, then a retry with the same
client_msg_id). Its outcome is ``acked`` (the system promised it is durable), ``failed``
(every attempt answered with an error and the client gave up) or ``unknown`` (no answer: the
connection died or the answer never came; the message may or may not be stored).

Pass criteria (``Verdict.problems``): every acked message is in history, once, exactly as acked;
no duplicate rows (``COUNT(*) = COUNT(DISTINCT id)`` and one row per (sender_id,
client_msg_id)); no row that no client ever sent.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pymysql

from services.common.ids import iso_ms


@dataclass
class Op:
    sender_id: str
    sender: str
    room: str
    cmid: str
    body: str
    started: float
    attempts: int = 0
    errors: list[str] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)  # attempts without an answer: why
    acked: dict[str, Any] | None = None
    acked_at: float | None = None
    gave_up: bool = False
    trail: list[tuple[float, str]] = field(default_factory=list)  # (time, what) per attempt


@dataclass
class Answer:
    at: float
    latency: float
    kind: str  # "ack" | error code | "timeout" | "closed"


class Ledger:
    def __init__(self, name: str) -> None:
        self.name = name
        self.ops: dict[tuple[str, str], Op] = {}
        self.answers: list[Answer] = []

    # recording -----------------------------------------------------------------------------
    def begin(self, sender_id: str, sender: str, room: str, cmid: str, body: str) -> Op:
        op = Op(sender_id, sender, room, cmid, body, time.monotonic())
        assert (sender_id, cmid) not in self.ops, "client_msg_id reused by the test itself"
        self.ops[(sender_id, cmid)] = op
        return op

    def attempt(self, op: Op) -> None:
        op.attempts += 1
        op.trail.append((time.monotonic(), "send"))

    def answered(self, op: Op, frame: dict[str, Any], latency: float) -> None:
        now = time.monotonic()
        op.trail.append((now, frame["type"] if frame["type"] == "ack" else str(frame.get("code"))))
        if frame["type"] == "ack":
            if op.acked is not None and frame["message"] != op.acked:
                op.errors.append("ack_changed")  # two acks for one message that differ
            op.acked = frame["message"]
            op.acked_at = now
            self.answers.append(Answer(now, latency, "ack"))
        else:
            op.errors.append(str(frame.get("code")))
            self.answers.append(Answer(now, latency, str(frame.get("code"))))

    def no_answer(self, op: Op, why: str, latency: float) -> None:
        op.lost.append(why)
        op.trail.append((time.monotonic(), why))
        self.answers.append(Answer(time.monotonic(), latency, why))

    def troubled(self, t0: float = 0.0) -> list[str]:
        """The ops that needed more than one attempt, with their trail (times since t0)."""
        out = []
        for op in self.ops.values():
            if op.attempts > 1 or op.acked is None:
                trail = ", ".join(f"{t - t0:.2f}:{what}" for t, what in op.trail)
                out.append(f"{op.cmid}: {trail}")
        return out

    # figures -------------------------------------------------------------------------------
    @property
    def acked(self) -> list[Op]:
        return [op for op in self.ops.values() if op.acked is not None]

    def answers_between(self, start: float, end: float) -> list[Answer]:
        return [a for a in self.answers if start <= a.at <= end]

    def first_ack_after(self, t: float) -> float | None:
        times = [a.at for a in self.answers if a.kind == "ack" and a.at >= t]
        return min(times) if times else None

    def figures(self) -> dict[str, Any]:
        kinds = Counter(a.kind for a in self.answers)
        latencies = sorted(a.latency for a in self.answers)
        return {
            "sent": len(self.ops),
            "attempts": sum(op.attempts for op in self.ops.values()),
            "acked": len(self.acked),
            "unacked": sum(1 for op in self.ops.values() if op.acked is None),
            "answers": dict(kinds),
            "max_answer_s": round(latencies[-1], 3) if latencies else 0.0,
            "p99_answer_s": round(latencies[int(len(latencies) * 0.99) - 1], 3)
            if latencies
            else 0.0,
        }


# what MySQL holds ----------------------------------------------------------------------------
@dataclass
class Verdict:
    figures: dict[str, Any]
    problems: list[str]
    rows: dict[str, dict[str, Any]]  # message id -> row

    def __bool__(self) -> bool:
        return not self.problems


def _connect(database_url: str) -> pymysql.connections.Connection[Any]:
    # mysql://user[:password]@host:port/name
    rest = database_url.split("://", 1)[1]
    auth, _, hostpart = rest.rpartition("@")
    user, _, password = auth.partition(":")
    hostport, _, name = hostpart.partition("/")
    host, _, port = hostport.partition(":")
    return pymysql.connect(
        host=host,
        port=int(port or 3306),
        user=user or "root",
        password=password,
        database=name.split("?")[0],
        autocommit=True,
        connect_timeout=5,
        read_timeout=30,
    )


def query_history(
    database_url: str, rooms: list[str]
) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The spec's queries: counts, distinct ids, duplicate (sender, client_msg_id); the rows.
    Of the rooms' sent messages: notices (what happened in a room, e.g. its creation) are not
    sends and are left out."""
    conn = _connect(database_url)
    try:
        with conn.cursor() as cur:
            marks = ",".join(["%s"] * len(rooms))
            cur.execute(
                "SELECT COUNT(*), COUNT(DISTINCT id) FROM messages "
                f"WHERE room_id IN ({marks}) AND kind = 'text'",
                rooms,
            )
            total, distinct = cur.fetchone()  # type: ignore[misc]
            cur.execute(
                "SELECT COUNT(*) FROM (SELECT sender_id, client_msg_id FROM messages "
                f"WHERE room_id IN ({marks}) AND kind = 'text' GROUP BY sender_id, client_msg_id "
                "HAVING COUNT(*) > 1) AS d",
                rooms,
            )
            dup_keys = cur.fetchone()[0]  # type: ignore[index]
            cur.execute(
                "SELECT id, room_id, sender_id, sender, body, sent_ms, client_msg_id, kind, "
                f"edited_ms, deleted FROM messages WHERE room_id IN ({marks}) AND kind = 'text'",
                rooms,
            )
            rows = list(cur.fetchall())
    finally:
        conn.close()
    return {"rows": int(total), "distinct_ids": int(distinct), "dup_keys": int(dup_keys)}, rows


def verify(ledger: Ledger, database_url: str, rooms: list[str]) -> Verdict:
    counts, raw = query_history(database_url, rooms)
    rows: dict[str, dict[str, Any]] = {}
    for rid, room, sender_id, sender, body, sent_ms, cmid, kind, edited_ms, deleted in raw:
        rows[rid] = {
            "id": rid,
            "room": room,
            "sender_id": sender_id,
            "sender": sender,
            "body": body,
            "sent_at": iso_ms(int(sent_ms)),
            "client_msg_id": cmid,
            "kind": kind,
            "edited_at": None if edited_ms is None else iso_ms(int(edited_ms)),
            "deleted": bool(deleted),
        }
    problems: list[str] = []
    missing, changed, ambiguous_stored = [], [], 0
    for op in ledger.ops.values():
        if op.acked is not None:
            row = rows.get(op.acked["id"])
            if row is None:
                missing.append(op.acked["id"])
                continue
            keys = ("id", "room", "sender", "body", "sent_at", "client_msg_id")
            stored = {k: row[k] for k in keys}
            # the ack's message is that row (and a plain text message: never edited here)
            acked = {k: op.acked.get(k) for k in keys}
            plain = (op.acked.get("kind"), op.acked.get("edited_at"), op.acked.get("deleted"))
            if stored != acked or plain != ("text", None, False):
                changed.append((op.acked, stored))
        elif any(
            r["sender_id"] == op.sender_id and r["client_msg_id"] == op.cmid for r in rows.values()
        ):
            ambiguous_stored += 1
    known = set(ledger.ops)
    phantoms = [r["id"] for r in rows.values() if (r["sender_id"], r["client_msg_id"]) not in known]
    duplicates = counts["rows"] - counts["distinct_ids"]
    if missing:
        problems.append(f"{len(missing)} acked messages are not in history, e.g. {missing[:3]}")
    if changed:
        problems.append(f"{len(changed)} acked messages differ from history, e.g. {changed[:2]}")
    if duplicates:
        problems.append(f"{duplicates} duplicate rows (COUNT(*) != COUNT(DISTINCT id))")
    if counts["dup_keys"]:
        problems.append(f"{counts['dup_keys']} (sender_id, client_msg_id) with several rows")
    if phantoms:
        problems.append(f"{len(phantoms)} rows nobody sent, e.g. {phantoms[:3]}")
    acked_changed = sum(1 for op in ledger.ops.values() if "ack_changed" in op.errors)
    if acked_changed:
        problems.append(f"{acked_changed} messages were acked twice with different contents")
    figures = {
        **ledger.figures(),
        "persisted": counts["rows"],
        "distinct_ids": counts["distinct_ids"],
        "duplicates": duplicates + counts["dup_keys"],
        "acked_missing": len(missing),
        "acked_differs_from_history": len(changed),
        "unacked_but_stored": ambiguous_stored,
    }
    return Verdict(figures, problems, rows)


def wait_verified(
    ledger: Ledger, database_url: str, rooms: list[str], timeout: float = 60.0
) -> tuple[Verdict, float]:
    """Poll until every acked message is in history (the writer may lag); the verdict and how
    long the drain took. Gives the last verdict (with its problems) at the deadline."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        try:
            verdict = verify(ledger, database_url, rooms)
        except pymysql.MySQLError as exc:
            if time.monotonic() > deadline:
                raise
            print(f"[{ledger.name}] database not answering yet: {exc}")
            time.sleep(0.5)
            continue
        if verdict.figures["acked_missing"] == 0 or time.monotonic() > deadline:
            return verdict, time.monotonic() - started
        time.sleep(0.25)


def wait_present(database_url: str, ids: list[str], timeout: float) -> float | None:
    """Seconds until every id is a row (the backlog drained); None if not within timeout."""
    started = time.monotonic()
    deadline = started + timeout
    while time.monotonic() < deadline:
        try:
            conn = _connect(database_url)
        except pymysql.MySQLError:
            time.sleep(0.2)
            continue
        try:
            with conn.cursor() as cur:
                found = 0
                for k in range(0, len(ids), 500):
                    chunk = ids[k : k + 500]
                    marks = ",".join(["%s"] * len(chunk))
                    cur.execute(f"SELECT COUNT(*) FROM messages WHERE id IN ({marks})", chunk)
                    found += int(cur.fetchone()[0])  # type: ignore[index]
        except pymysql.MySQLError:
            found = -1
        finally:
            conn.close()
        if found == len(ids):
            return time.monotonic() - started
        time.sleep(0.1)
    return None
