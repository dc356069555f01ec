"""``GET /api/search``: the messages containing every word of ``q`` in the rooms the caller is a
member of now (or in one of them), newest first, by (``sent_ms``, ``id``) like history.

The index is ``message_search`` (one document per text message that is not deleted, its folded
words: services/history/searchtext.py) with its full-text index: InnoDB ``FULLTEXT`` on
MariaDB/MySQL, FTS5 on SQLite. A full-text query costs what its words' posting lists cost:
InnoDB builds the set of every matching document and reads each one's row (to filter by room
and sort by time), ~1 µs a document with the rows in memory and ~100 µs without, so a common
word (in 10% of a million messages) costs seconds. Newest-first with a limit does not need
that: the newest messages of the caller's rooms hold a common word's first page. So a search
runs in two steps (``search``):

1. **recent**: the caller's rooms' messages of the last hour, then day, week and month
   (``WINDOWS``, back from ``before`` or now), read on ``ix_message_search_room_time`` and
   matched with ``LIKE`` on the folded words (the very rule of the full-text query:
   ``searchtext.like_patterns``), newest window first, until the page is full. Each window is
   first counted on the index alone, and the step stops (for step 2) before reading more than
   ``SCAN_BUDGET`` messages in all: a busy caller's month is not read row by row.
2. **older**: what remains is found by the full-text index (a word that did not fill a page
   from the caller's recent messages is rare there, so its posting list is short), restricted
   to the caller's rooms and to messages older than step 1 reached. If the caller's remaining
   messages are few (``SCAN_BUDGET`` at most), they are read as in step 1 instead.

Both steps return messages in (``sent_ms``, ``id``) order and step 2 only older ones than step
1's, so the pages are exactly ordered and ``before=<the last id>`` continues where one ended.
The cost is bounded by ``SCAN_BUDGET`` index entries and rows plus the full-text query of a
word that is rare in the caller's recent messages; docs/SCALING.md says where it stops
scaling (a word common elsewhere but rare in the caller's rooms costs its global posting list).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, bindparam, select, text
from sqlalchemy.engine import Connection, Engine

from services.common.ids import now_ms
from services.common.models import FTS5_TABLE, Membership, Message
from services.history.queries import (
    MESSAGE_COLUMNS,
    CursorNotFound,
    NotMember,
    is_member,
    message_json,
)
from services.history.searchtext import Term, boolean_mode, fts5_query, like_patterns

HOUR_MS = 3_600_000
WINDOWS = (HOUR_MS, 24 * HOUR_MS, 7 * 24 * HOUR_MS, 30 * 24 * HOUR_MS)
SCAN_BUDGET = 5000  # messages step 1 reads at most (counted on the index first)
LIMIT_DEFAULT = 20
LIMIT_MAX = 50

MESSAGES = cast(Table, Message.__table__)
MEMBERSHIPS = cast(Table, Membership.__table__)


@dataclass(frozen=True)
class SearchPage:
    messages: list[dict[str, Any]]
    has_more: bool
    steps: tuple[str, ...] = ()  # how it was answered (tests, the benchmark's breakdown)


@dataclass(frozen=True)
class Bound:
    """Messages before (``sent_ms``, ``id``) in history order; ``id`` "" = before ``sent_ms``."""

    sent_ms: int
    id: str = ""


def _rooms(conn: Connection, user_id: str, room: str | None) -> list[str]:
    if room is not None:
        if not is_member(conn, room, user_id):
            raise NotMember(room)
        return [room]
    q = select(MEMBERSHIPS.c.room_id).where(MEMBERSHIPS.c.user_id == user_id)
    return sorted(conn.scalars(q))


def _cursor(conn: Connection, rooms: list[str], message_id: str) -> Bound:
    """``before``: a message of one of the rooms searched (deleted ones too: a page may end on
    a message deleted since)."""
    row = conn.execute(
        select(MESSAGES.c.room_id, MESSAGES.c.sent_ms).where(MESSAGES.c.id == message_id)
    ).first()
    if row is None or row.room_id not in set(rooms):
        raise CursorNotFound(message_id)
    return Bound(row.sent_ms, message_id)


def _where(lo: int | None, hi: Bound | None) -> tuple[str, dict[str, Any]]:
    parts = ["s.room_id IN :rooms"]
    params: dict[str, Any] = {}
    if lo is not None:
        parts.append("s.sent_ms >= :lo")
        params["lo"] = lo
    if hi is not None:
        parts.append("(s.sent_ms < :hi_ms OR (s.sent_ms = :hi_ms AND s.message_id < :hi_id))")
        params.update(hi_ms=hi.sent_ms, hi_id=hi.id)
    return " AND ".join(parts), params


def _run(conn: Connection, sql: str, params: dict[str, Any], rooms: list[str]) -> list[Any]:
    statement = text(sql).bindparams(bindparam("rooms", expanding=True))
    return list(conn.execute(statement, {**params, "rooms": rooms}).all())


def _count(conn: Connection, rooms: list[str], lo: int | None, hi: Bound | None, cap: int) -> int:
    """How many of the rooms' messages lie in [lo, hi), counted up to ``cap`` (on the index)."""
    where, params = _where(lo, hi)
    sql = (
        f"SELECT COUNT(*) FROM (SELECT 1 FROM message_search s WHERE {where} LIMIT {int(cap)}) AS x"
    )
    return int(_run(conn, sql, params, rooms)[0][0])


def _scan(
    conn: Connection,
    rooms: list[str],
    terms: list[Term],
    lo: int | None,
    hi: Bound | None,
    limit: int,
) -> list[Any]:
    where, params = _where(lo, hi)
    padded = (
        "CONCAT(' ', s.text, ' ')" if conn.dialect.name != "sqlite" else "(' ' || s.text || ' ')"
    )
    for i, pattern in enumerate(like_patterns(terms)):
        where += f" AND {padded} LIKE :p{i} ESCAPE '!'"
        params[f"p{i}"] = pattern
    sql = (
        f"SELECT s.message_id, s.sent_ms FROM message_search s WHERE {where} "
        f"ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT {int(limit)}"
    )
    return _run(conn, sql, params, rooms)


def _full_text(
    conn: Connection, rooms: list[str], terms: list[Term], hi: Bound | None, limit: int
) -> list[Any]:
    where, params = _where(None, hi)
    order = f"ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT {int(limit)}"
    if conn.dialect.name == "sqlite":
        sql = (
            f"SELECT s.message_id, s.sent_ms FROM {FTS5_TABLE} "
            f"JOIN message_search s ON s.FTS_DOC_ID = {FTS5_TABLE}.rowid "
            f"WHERE {FTS5_TABLE} MATCH :q AND {where} {order}"
        )
        params["q"] = fts5_query(terms)
    else:
        # the full-text index drives (the optimizer could prefer the rooms' range: all of
        # the caller's messages); each candidate's row then says its room and time
        sql = (
            "SELECT s.message_id, s.sent_ms FROM message_search s "
            "IGNORE INDEX (ix_message_search_room_time) "
            f"WHERE MATCH (s.text) AGAINST (:q IN BOOLEAN MODE) AND {where} {order}"
        )
        params["q"] = boolean_mode(terms)
    return _run(conn, sql, params, rooms)


def _find(
    conn: Connection, rooms: list[str], terms: list[Term], top: Bound | None, limit: int
) -> tuple[list[Any], list[str]]:
    """Up to ``limit`` (message_id, sent_ms) before ``top``, newest first; and the steps."""
    found: list[Any] = []
    steps: list[str] = []
    start = top.sent_ms if top is not None else now_ms()
    hi = top
    budget = SCAN_BUDGET
    for window in WINDOWS:
        lo = start - window
        n = _count(conn, rooms, lo, hi, budget + 1)
        if n > budget:
            break
        budget -= n
        if n:
            found += _scan(conn, rooms, terms, lo, hi, limit - len(found))
        steps.append(f"recent:{window // HOUR_MS}h:{n}")
        hi = Bound(lo)
        if len(found) >= limit:
            return found, steps
    else:
        n = _count(conn, rooms, None, hi, budget + 1)
        if n <= budget:
            if n:
                found += _scan(conn, rooms, terms, None, hi, limit - len(found))
            steps.append(f"rest:{n}")
            return found, steps
    found += _full_text(conn, rooms, terms, hi, limit - len(found))
    steps.append("full_text")
    return found, steps


def search(
    engine: Engine,
    user_id: str,
    terms: list[Term],
    *,
    room: str | None = None,
    before: str | None = None,
    limit: int = LIMIT_DEFAULT,
) -> SearchPage:
    """One page of results. Raises NotMember (``room`` given and the caller is not in it) or
    CursorNotFound (``before`` is not a message of the rooms searched)."""
    with engine.connect() as conn:
        rooms = _rooms(conn, user_id, room)
        if not rooms:
            if before is not None:
                raise CursorNotFound(before)
            return SearchPage([], False)
        top = _cursor(conn, rooms, before) if before is not None else None
        found, steps = _find(conn, rooms, terms, top, limit + 1)
        page = [r.message_id for r in found[:limit]]
        rows = (
            {
                r.id: r
                for r in conn.execute(select(*MESSAGE_COLUMNS).where(MESSAGES.c.id.in_(page))).all()
            }
            if page
            else {}
        )
    # a message deleted between the two reads is left out (never a tombstone in results)
    messages = [message_json(rows[i]) for i in page if i in rows and not rows[i].deleted]
    return SearchPage(messages, len(found) > limit, tuple(steps))
