"""Database engines: MySQL through PyMySQL in the scaled mode, SQLite all-in-one."""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine


def engine_options(url: str) -> dict[str, Any]:
    if url.startswith("sqlite"):
        return {"connect_args": {"check_same_thread": False, "timeout": 30}}
    return {
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "pool_size": 10,
        "max_overflow": 20,
        # a hung or paused server surfaces as an error (and a retry), never a stuck thread
        "connect_args": {"connect_timeout": 5, "read_timeout": 30, "write_timeout": 30},
    }


def normalize_url(url: str) -> str:
    """``mysql://`` means PyMySQL here, with utf8mb4 so any Unicode round-trips."""
    if url.startswith("mysql://"):
        url = "mysql+pymysql://" + url[len("mysql://") :]
    if url.startswith("mysql+pymysql://") and "charset=" not in url:
        url += ("&" if "?" in url else "?") + "charset=utf8mb4"
    return url


def make_engine(url: str, **overrides: Any) -> Engine:
    url = normalize_url(url)
    options = engine_options(url)
    options.update(overrides)
    engine = create_engine(url, **options)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    # FULL: a commit is on disk (the WAL fsynced) when it returns, so what the all-in-one mode
    # acks survives a power cut too, not only a crash (the history writer commits in batches)
    cur.execute("PRAGMA synchronous=FULL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()
