"""Writing batches of messages, edits and deletes: one idempotent multi-row INSERT of the
messages and one of their search documents per batch, then the edits and deletes in order, then
the rooms' ``last_activity_ms``, in one transaction.

Idempotency is the database's: the primary key is the message id (derived from the sender and
the client's ``client_msg_id``) and ``(sender_id, client_msg_id)`` is unique, so a redelivered or
retried message never becomes a second row. The statement is the dialect's own:

- MySQL/MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE id = messages.id`` (a no-op on any unique
  key; unlike ``INSERT IGNORE`` it does not turn a too-long or invalid value into a warning and a
  silently truncated row: such a row fails and is isolated as poison);
- SQLite: ``INSERT ... ON CONFLICT DO NOTHING``.

Edits and deletes (``Change``, see ``apply_changes``) are idempotent by ``message_changes``: a
change's id is derived from its actor and ``client_msg_id``, and a change already recorded
changes nothing again. The search index (``message_search``, services/common/models.py) is
written in the same transaction as what it indexes: a new text message adds its document, an
edit replaces it, a delete removes it (and ``body`` becomes NULL).

Errors are sorted in two kinds (``is_data_error``): a row the database rejects (IntegrityError,
DataError) is the message's fault and retried alone to find it; anything else (connection lost,
timeout, deadlock, missing table...) is the database's fault: the batch is retried as a whole.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, select, text, update
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.sql.dml import Insert

from services.common.db import make_engine, normalize_url
from services.common.ids import change_id, now_ms
from services.common.models import Message, MessageChange, MessageSearch, Room
from services.history.searchtext import index_text
from services.history.wire import Change, Entry, Row

log = logging.getLogger("chat.history.store")

MESSAGES = cast(Table, Message.__table__)
ROOMS = cast(Table, Room.__table__)
CHANGES = cast(Table, MessageChange.__table__)
SEARCH = cast(Table, MessageSearch.__table__)
PENDING_SCAN = 1000  # pending changes read at once to match a batch against (usually none)
PENDING_TTL_MS = 7 * 24 * 3600 * 1000  # a change whose message never came: dropped after this


def history_engine(url: str, *, io_timeout: int = 10) -> Engine:
    """The shared engine factory, plus socket timeouts on MySQL so that a hung or paused server
    surfaces as an OperationalError (and a retry) instead of a writer stuck forever."""
    if normalize_url(url).startswith("mysql"):
        args = {"connect_timeout": 3, "read_timeout": io_timeout, "write_timeout": io_timeout}
        return make_engine(url, connect_args=args)
    return make_engine(url)


def is_data_error(exc: BaseException) -> bool:
    """True when the database refused the data itself (not a fault of the database)."""
    return isinstance(exc, IntegrityError | DataError)


SQLITE_ROWS_PER_INSERT = 500  # 8 parameters a row, well under SQLite's 32766


def insert_ignoring_duplicates(dialect: str) -> Insert:
    """The idempotent INSERT of one row, executed with the batch's rows as parameters.

    MySQL: PyMySQL's ``executemany`` sends it as ONE multi-row ``INSERT ... VALUES (..),(..)
    ON DUPLICATE KEY UPDATE`` (split only past ~1 MB), for a fifth of the Python time of
    SQLAlchemy's multi-VALUES construct, which is compiled anew for every batch."""
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(MESSAGES).on_duplicate_key_update(id=MESSAGES.c.id)
    if dialect == "sqlite":
        return sqlite.insert(MESSAGES).on_conflict_do_nothing()
    raise NotImplementedError(f"no idempotent insert for the {dialect!r} dialect")


def _execute_insert(conn: Connection, values: list[dict[str, Any]]) -> None:
    dialect = conn.dialect.name
    if dialect == "sqlite":  # SQLite's executemany steps a one-row statement: send VALUES lists
        for k in range(0, len(values), SQLITE_ROWS_PER_INSERT):
            chunk = values[k : k + SQLITE_ROWS_PER_INSERT]
            conn.execute(sqlite.insert(MESSAGES).values(chunk).on_conflict_do_nothing())
        return
    conn.execute(insert_ignoring_duplicates(dialect), values)


def _insert_documents(conn: Connection, docs: list[dict[str, Any]]) -> None:
    """Search documents (``message_search``; on SQLite its triggers fill FTS5)."""
    if not docs:
        return
    if conn.dialect.name == "sqlite":
        for k in range(0, len(docs), SQLITE_ROWS_PER_INSERT):
            conn.execute(SEARCH.insert().values(docs[k : k + SQLITE_ROWS_PER_INSERT]))
        return
    conn.execute(SEARCH.insert(), docs)  # PyMySQL: one multi-row INSERT


def document(message_id: str, room_id: str, sent_ms: int, body: str) -> dict[str, Any] | None:
    """The search document of a text message (None if it has no word to find it by)."""
    words = index_text(body)
    if not words:
        return None
    return {"message_id": message_id, "room_id": room_id, "sent_ms": sent_ms, "text": words}


@dataclass
class Written:
    """What one committed write did."""

    new: list[Row] = field(default_factory=list)  # rows inserted now
    duplicates: int = 0  # rows already stored (or twice in the batch)
    committed_ms: int = 0
    # each change of the write and what became of it: applied | pending | refused | moot |
    # duplicate (recorded before: nothing done again); pending ones applied now, as "applied"
    changes: list[tuple[Change, str]] = field(default_factory=list)
    pending_applied: int = 0


@dataclass
class Rejected:
    row: Entry
    error: str


def bump_rooms_sql(n: int) -> str:
    """One statement for the batch's rooms: each room's ``last_activity_ms`` becomes its newest
    message's ``sent_ms`` unless it is already newer (``WHERE id = :room AND last_activity_ms <
    :ms``, for all the rooms at once). Rows are locked in primary-key order by every writer."""
    whens = " ".join(f"WHEN :r{i} THEN :m{i}" for i in range(n))
    ids = ", ".join(f":r{i}" for i in range(n))
    newest = f"CASE id {whens} END"
    return (
        f"UPDATE rooms SET last_activity_ms = {newest} "
        f"WHERE id IN ({ids}) AND last_activity_ms < {newest}"
    )


def _bump_rooms(conn: Connection, rows: Sequence[Row]) -> None:
    latest: dict[str, int] = {}
    for row in rows:
        latest[row.room_id] = max(row.sent_ms, latest.get(row.room_id, 0))
    rooms = sorted(latest)
    for k in range(0, len(rooms), 500):
        chunk = rooms[k : k + 500]
        params: dict[str, Any] = {}
        for i, room_id in enumerate(chunk):
            params[f"r{i}"], params[f"m{i}"] = room_id, latest[room_id]
        conn.execute(text(bump_rooms_sql(len(chunk))), params)


def _insert(conn: Connection, rows: Sequence[Row], result: Written) -> None:
    if not rows:
        return
    unique: dict[str, Row] = {}
    for row in rows:
        if row.id in unique:
            result.duplicates += 1
        else:
            unique[row.id] = row
    existing = set(conn.scalars(select(MESSAGES.c.id).where(MESSAGES.c.id.in_(list(unique)))))
    result.duplicates += len(existing)
    fresh = [row for row_id, row in unique.items() if row_id not in existing]
    if fresh:
        written_ms = now_ms()
        _execute_insert(conn, [row.values(written_ms) for row in fresh])
        docs = [
            document(r.id, r.room_id, r.sent_ms, r.body)
            for r in fresh
            if r.kind == "text" and r.body is not None
        ]
        _insert_documents(conn, [d for d in docs if d is not None])
        _apply_pending(conn, fresh, result)
    result.new.extend(fresh)


def _write(conn: Connection, items: Sequence[Entry], result: Written) -> None:
    """Messages first (and the changes that were waiting for them), then this write's changes
    in their order (a change always follows its message in a shard's queue), then rooms."""
    rows = [i for i in items if isinstance(i, Row)]
    _insert(conn, rows, result)
    apply_changes(conn, [i for i in items if isinstance(i, Change)], result)
    if rows:
        _bump_rooms(conn, rows)


def write_batch(engine: Engine, items: Sequence[Entry]) -> Written:
    """Everything in one transaction, or nothing (the exception says why)."""
    result = Written()
    if items:
        with engine.begin() as conn:
            _write(conn, items, result)
    result.committed_ms = now_ms()
    return result


def write_each(engine: Engine, items: Sequence[Entry]) -> tuple[Written, list[Rejected]]:
    """Each entry in its own transaction (in order), to find the ones the database rejects.

    A data error rejects that entry only; any other error propagates (the database is at
    fault, the caller retries the whole batch: what was committed so far is idempotent)."""
    result = Written()
    rejected: list[Rejected] = []
    for item in items:
        one = Written()
        try:
            with engine.begin() as conn:
                _write(conn, [item], one)
        except Exception as exc:
            if not is_data_error(exc):
                raise
            rejected.append(Rejected(item, _short(exc)))
            continue
        result.new.extend(one.new)
        result.duplicates += one.duplicates
        result.changes.extend(one.changes)
        result.pending_applied += one.pending_applied
    result.committed_ms = now_ms()
    return result, rejected


# edits and deletes ---------------------------------------------------------------------------
def apply_changes(conn: Connection, changes: Sequence[Change], result: Written) -> None:
    """Apply each change once, in order, and record it in ``message_changes``.

    - already recorded (a redelivery, a retry: same actor and ``client_msg_id``): nothing;
    - its message is not stored (yet): recorded ``pending`` (an edit keeps its text there) and
      applied by the write that stores the message (``_apply_pending``);
    - otherwise ``_apply``: ``applied``, ``refused`` or ``moot``."""
    if not changes:
        return
    ids = list(dict.fromkeys(c.id for c in changes))
    known = set(conn.scalars(select(CHANGES.c.id).where(CHANGES.c.id.in_(ids))))
    written_ms = now_ms()
    for change in changes:
        if change.id in known:
            result.changes.append((change, "duplicate"))
            continue
        known.add(change.id)
        status = _apply(conn, change)
        if status == "pending" and change.kind == "delete":
            _forget_pending_text(conn, change.message_id)
        conn.execute(
            CHANGES.insert().values(
                id=change.id,
                message_id=change.message_id,
                room_id=change.room_id,
                actor_id=change.actor_id,
                kind=change.kind,
                at_ms=change.at_ms,
                status=status,
                body=change.body if status == "pending" else None,
                written_ms=written_ms,
            )
        )
        result.changes.append((change, status))


def _apply(conn: Connection, change: Change) -> str:
    m = MESSAGES.c
    msg = conn.execute(
        select(m.room_id, m.sender_id, m.sent_ms, m.kind, m.deleted).where(
            m.id == change.message_id
        )
    ).first()
    if msg is None:
        return "pending"
    if msg.room_id != change.room_id or msg.kind != "text":
        log.warning("refused a %s of %s: another room, or a notice", change.kind, change.message_id)
        return "refused"
    if msg.deleted:
        return "moot"
    if change.kind == "edit":
        if change.actor_id != msg.sender_id:
            log.warning("refused an edit of %s: not its sender", change.message_id)
            return "refused"
        assert change.body is not None
        conn.execute(
            update(MESSAGES)
            .where(m.id == change.message_id)
            .values(body=change.body, edited_ms=change.at_ms)
        )
        # a new document (InnoDB wants a new FTS_DOC_ID for new text; FTS5's triggers follow)
        conn.execute(delete(SEARCH).where(SEARCH.c.message_id == change.message_id))
        doc = document(change.message_id, msg.room_id, msg.sent_ms, change.body)
        _insert_documents(conn, [doc] if doc else [])
        return "applied"
    if change.actor_id != msg.sender_id:
        owner = conn.scalar(select(ROOMS.c.owner_id).where(ROOMS.c.id == msg.room_id))
        if change.actor_id != owner:
            log.warning(
                "refused a delete of %s: neither its sender nor the owner", change.message_id
            )
            return "refused"
    conn.execute(
        update(MESSAGES)
        .where(m.id == change.message_id)
        .values(body=None, deleted=True, deleted_ms=change.at_ms)
    )
    conn.execute(delete(SEARCH).where(SEARCH.c.message_id == change.message_id))
    return "applied"


def _forget_pending_text(conn: Connection, message_id: str) -> None:
    """A delete is waiting for its message: the edits waiting with it need no text any more."""
    conn.execute(
        update(CHANGES)
        .where(
            CHANGES.c.message_id == message_id,
            CHANGES.c.status == "pending",
            CHANGES.c.body.is_not(None),
        )
        .values(body=None)
    )


def _apply_pending(conn: Connection, fresh: Sequence[Row], result: Written) -> None:
    """The changes that arrived before these new messages, applied now in their order. One
    index read of the (normally empty) pending changes decides whether there is any."""
    c = CHANGES.c
    waiting = conn.execute(
        select(c.message_id, c.written_ms).where(c.status == "pending").limit(PENDING_SCAN + 1)
    ).all()
    if not waiting:
        return
    ids = {r.id for r in fresh}
    if len(waiting) <= PENDING_SCAN:
        targets = sorted(ids & {w.message_id for w in waiting})
        if any(w.written_ms < now_ms() - PENDING_TTL_MS for w in waiting):
            _expire_pending(conn)
    else:
        targets = sorted(ids)
    if not targets:
        return
    for k in range(0, len(targets), 500):
        pending = conn.execute(
            select(c.seq, c.id, c.kind, c.message_id, c.room_id, c.actor_id, c.at_ms, c.body)
            .where(c.status == "pending", c.message_id.in_(targets[k : k + 500]))
            .order_by(c.seq)
        ).all()
        for p in pending:
            change = Change(p.id, p.kind, p.message_id, p.room_id, p.actor_id, "", p.at_ms, p.body)
            # an edit whose text a waiting delete erased: the delete (next in order) wins
            status = "moot" if p.kind == "edit" and p.body is None else _apply(conn, change)
            conn.execute(update(CHANGES).where(c.seq == p.seq).values(status=status, body=None))
            result.pending_applied += 1


def _expire_pending(conn: Connection) -> None:
    cut = now_ms() - PENDING_TTL_MS
    n = conn.execute(
        update(CHANGES)
        .where(CHANGES.c.status == "pending", CHANGES.c.written_ms < cut)
        .values(status="expired", body=None)
    ).rowcount
    if n:
        log.warning("%d changes waited over %d days for their message: expired", n, 7)


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"[:300]


@dataclass(frozen=True)
class ChangeRecord:
    message_id: str
    kind: str  # edit | delete
    status: str  # applied | pending | refused | moot | expired
    at_ms: int


def change_status(engine: Engine, actor_id: str, client_msg_id: str) -> ChangeRecord | None:
    """What became of the edit or delete ``(actor_id, client_msg_id)``, if the writer has
    recorded it: how a gateway answers a retried ``edit``/``delete`` frame the same way."""
    c = CHANGES.c
    with engine.connect() as conn:
        row = conn.execute(
            select(c.message_id, c.kind, c.status, c.at_ms).where(
                c.id == change_id(actor_id, client_msg_id)
            )
        ).first()
    return None if row is None else ChangeRecord(row.message_id, row.kind, row.status, row.at_ms)
