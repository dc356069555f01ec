"""Writing batches of messages: one idempotent multi-row INSERT per batch, then the rooms'
``last_activity_ms``, in one transaction.

Idempotency is the database's: the primary key is the message id (derived from the sender and
the client's ``client_msg_id``) and ``(sender_id, client_msg_id)`` is unique, so a redelivered or
retried message never becomes a second row. The statement is the dialect's own:

- MySQL/MariaDB: ``INSERT ... ON DUPLICATE KEY UPDATE id = messages.id`` (a no-op on any unique
  key; unlike ``INSERT IGNORE`` it does not turn a too-long or invalid value into a warning and a
  silently truncated row: such a row fails and is isolated as poison);
- SQLite: ``INSERT ... ON CONFLICT DO NOTHING``.

Errors are sorted in two kinds (``is_data_error``): a row the database rejects (IntegrityError,
DataError) is the message's fault and retried alone to find it; anything else (connection lost,
timeout, deadlock, missing table...) is the database's fault: the batch is retried as a whole.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Connection, Table, select, text
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DataError, IntegrityError
from sqlalchemy.sql.dml import Insert

from services.common.db import make_engine, normalize_url
from services.common.ids import now_ms
from services.common.models import Message, Room
from services.history.wire import Row

MESSAGES = cast(Table, Message.__table__)
ROOMS = cast(Table, Room.__table__)


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


@dataclass
class Written:
    """What one committed write did."""

    new: list[Row] = field(default_factory=list)  # rows inserted now
    duplicates: int = 0  # rows already stored (or twice in the batch)
    committed_ms: int = 0


@dataclass
class Rejected:
    row: Row
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
    result.new.extend(fresh)


def write_batch(engine: Engine, rows: Sequence[Row]) -> Written:
    """All rows in one transaction, or nothing (the exception says why)."""
    result = Written()
    if rows:
        with engine.begin() as conn:
            _insert(conn, rows, result)
            _bump_rooms(conn, rows)
    result.committed_ms = now_ms()
    return result


def write_each(engine: Engine, rows: Sequence[Row]) -> tuple[Written, list[Rejected]]:
    """Each row in its own transaction, to find the ones the database rejects.

    A data error rejects that row only; any other error propagates (the database is at fault,
    the caller retries the whole batch: the rows committed so far are idempotent)."""
    result = Written()
    rejected: list[Rejected] = []
    for row in rows:
        one = Written()
        try:
            with engine.begin() as conn:
                _insert(conn, [row], one)
                _bump_rooms(conn, [row])
        except Exception as exc:
            if not is_data_error(exc):
                raise
            rejected.append(Rejected(row, _short(exc)))
            continue
        result.new.extend(one.new)
        result.duplicates += one.duplicates
    result.committed_ms = now_ms()
    return result, rejected


def _short(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    return f"{type(exc).__name__}: {orig if orig is not None else exc}"[:300]
