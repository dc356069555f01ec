"""``GET /api/search``: the messages containing every word of ``q`` in the rooms the caller is a
member of now (or in one of them), newest first, by (``sent_ms``, ``id``) like history.

The index is ``message_search`` (one document per text message that is not deleted, its folded
words: services/history/searchtext.py) with its full-text index: InnoDB ``FULLTEXT`` on
MariaDB/MySQL, FTS5 on SQLite. A full-text query costs what its words' posting lists cost:
InnoDB builds the set of every matching document (0.8 s for a word in half of a million
messages) and reads each one's row to filter it by room and sort it by time (1-2 µs a row in
memory, ~100 µs from disk). Newest-first with a limit does not need all that for a common word:
the newest messages hold its first page. So a search runs in up to three steps (``_find``):

1. **recent**: the newest ``RECENT_DOCS`` documents (of every room, on ``ix_message_search_time``;
   of the one room with ``room=``, on ``ix_message_search_room_time``) before the cursor, kept
   if they are in the caller's rooms and match (``LIKE`` on the folded words: the very rule of
   the full-text query, ``searchtext.like_patterns``). A common word fills its page here. These
   are the most recently written rows: contiguous, and the likeliest in memory.
2. if step 1 found matches but not a page, their density among the caller's documents says
   how many more of the caller's documents would fill it; they are read (a) **more_recent**:
   newest first again, if that stays within ``RECENT_MAX`` documents of all rooms (a caller
   whose rooms carry much of the traffic), or else (b) **rooms**: room by room, the caller's
   documents of the time that should hold them (at most ``ROOMS_MAX``; a caller whose rooms
   are a small share of all; also ``PROBE_DOCS`` of them when step 1 saw too few to tell).
3. **full text**: what remains (older than what steps 1-2 read) comes from the full-text index,
   restricted to the caller's rooms: a word rare among the caller's newest documents has a
   short posting list.

Each step's range ends where the previous one started (a keyset on (``sent_ms``, ``id``)), so
the results are exactly in history order and ``before=<the last id>`` continues a page. The
range of steps 1-2 is found first on the index alone (the k-th newest document: ``_boundary``).
The room list is a filter on rows read by time, never a range list (MariaDB would estimate
each room's range with two index dives: ~15 ms for 500 rooms, in every query).

What it costs: steps 1 and 2a read at most ``RECENT_MAX`` index entries and rows, newest first;
step 2b one range per room of the caller's (MariaDB estimates each with index dives) and at
most ``ROOMS_MAX`` rows; step 3 the posting lists of words that are rare among the caller's
newest documents. The worst case is a word rare in recent messages but common in old ones (or
common elsewhere but rare in the caller's rooms): its whole posting list.
docs/SCALING.md says how search grows past that.
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

RECENT_DOCS = 5000  # step 1: the newest documents (index entries) read
RECENT_MAX = 100_000  # index entries read newest first (steps 1 and 2a) at most
ROOMS_MAX = 5000  # step 2b: the caller's own documents read room by room at most
SAMPLE_MIN = 200  # the caller's documents read without a match: the word is rare for them
PROBE_DOCS = 2000  # how many of the caller's documents to read next when none matched yet
LIMIT_DEFAULT = 20
LIMIT_MAX = 50
TIME_INDEX = "ix_message_search_time"
ROOM_INDEX = "ix_message_search_room_time"

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


def _range(lo: Bound | None, hi: Bound | None) -> tuple[list[str], dict[str, Any]]:
    """Documents in [lo, hi) in history order (``lo`` inclusive, ``hi`` exclusive)."""
    parts: list[str] = []
    params: dict[str, Any] = {}
    if lo is not None:
        parts.append("(s.sent_ms > :lo_ms OR (s.sent_ms = :lo_ms AND s.message_id >= :lo_id))")
        params.update(lo_ms=lo.sent_ms, lo_id=lo.id)
    if hi is not None:
        parts.append("(s.sent_ms < :hi_ms OR (s.sent_ms = :hi_ms AND s.message_id < :hi_id))")
        params.update(hi_ms=hi.sent_ms, hi_id=hi.id)
    return parts, params


def _run(conn: Connection, sql: str, params: dict[str, Any], rooms: list[str]) -> list[Any]:
    statement = text(sql)
    if ":rooms" in sql:
        statement = statement.bindparams(bindparam("rooms", expanding=True))
        params = {**params, "rooms": rooms}
    return list(conn.execute(statement, params).all())


def _source(conn: Connection, room: str | None) -> tuple[str, list[str], dict[str, Any]]:
    """The table read newest first (with the index to read it by) and the room condition."""
    index = ROOM_INDEX if room is not None else TIME_INDEX
    hint = f"INDEXED BY {index}" if conn.dialect.name == "sqlite" else f"FORCE INDEX ({index})"
    if room is None:
        return f"message_search AS s {hint}", [], {}
    return f"message_search AS s {hint}", ["s.room_id = :room"], {"room": room}


def _boundary(conn: Connection, room: str | None, hi: Bound | None, k: int) -> Bound | None:
    """The k-th newest document before ``hi`` (of the room, or of all), on the index alone;
    None if there are fewer."""
    source, where, params = _source(conn, room)
    parts, more = _range(None, hi)
    cond = " AND ".join(where + parts) or "1 = 1"
    sql = (
        f"SELECT s.sent_ms, s.message_id FROM {source} WHERE {cond} "
        f"ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT 1 OFFSET {int(k) - 1}"
    )
    row = conn.execute(text(sql), {**params, **more}).first()
    return None if row is None else Bound(row.sent_ms, row.message_id)


def _scan(
    conn: Connection,
    rooms: list[str],
    room: str | None,
    terms: list[Term],
    lo: Bound | None,
    hi: Bound | None,
    limit: int,
) -> list[Any]:
    """The matches among the documents in [lo, hi), read newest first by time."""
    source, where, params = _source(conn, room)
    parts, more = _range(lo, hi)
    params.update(more)
    if room is None:
        where.append("s.room_id IN :rooms")  # a filter on the rows read, not a range list
    padded = (
        "(' ' || s.text || ' ')" if conn.dialect.name == "sqlite" else "CONCAT(' ', s.text, ' ')"
    )
    for i, pattern in enumerate(like_patterns(terms)):
        parts.append(f"{padded} LIKE :p{i} ESCAPE '!'")
        params[f"p{i}"] = pattern
    sql = (
        f"SELECT s.message_id, s.sent_ms FROM {source} WHERE {' AND '.join(where + parts)} "
        f"ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT {int(limit)}"
    )
    return _run(conn, sql, params, rooms)


def _full_text(
    conn: Connection, rooms: list[str], terms: list[Term], hi: Bound | None, limit: int
) -> list[Any]:
    parts, params = _range(None, hi)
    parts.append("s.room_id IN :rooms")
    where = " AND ".join(parts)
    order = f"ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT {int(limit)}"
    if conn.dialect.name == "sqlite":
        sql = (
            f"SELECT s.message_id, s.sent_ms FROM {FTS5_TABLE} "
            f"JOIN message_search s ON s.FTS_DOC_ID = {FTS5_TABLE}.rowid "
            f"WHERE {FTS5_TABLE} MATCH :q AND {where} {order}"
        )
        params["q"] = fts5_query(terms)
    else:
        # the full-text index drives; each candidate's row says its room and time
        sql = (
            f"SELECT s.message_id, s.sent_ms FROM message_search s "
            f"IGNORE INDEX ({ROOM_INDEX}, {TIME_INDEX}) "
            f"WHERE MATCH (s.text) AGAINST (:q IN BOOLEAN MODE) AND {where} {order}"
        )
        params["q"] = boolean_mode(terms)
    return _run(conn, sql, params, rooms)


def _count(conn: Connection, rooms: list[str], lo: Bound | None, hi: Bound | None) -> int:
    """How many documents of the caller's rooms lie in [lo, hi) (read by time)."""
    source, where, params = _source(conn, None)
    parts, more = _range(lo, hi)
    sql = f"SELECT COUNT(*) FROM {source} WHERE {' AND '.join([*where, *parts, 's.room_id IN :rooms'])}"
    return int(_run(conn, sql, {**params, **more}, rooms)[0][0])


def _scan_rooms(
    conn: Connection, rooms: list[str], terms: list[Term], since: int, hi: Bound | None, limit: int
) -> list[Any]:
    """The matches among the caller's documents sent since ``since`` and before ``hi``, read
    room by room (one range per room: for a caller whose rooms are a small share of all)."""
    hint = (
        f"INDEXED BY {ROOM_INDEX}"
        if conn.dialect.name == "sqlite"
        else f"FORCE INDEX ({ROOM_INDEX})"
    )
    parts, params = _range(None, hi)
    parts += ["s.room_id IN :rooms", "s.sent_ms >= :since"]
    params["since"] = since
    padded = (
        "(' ' || s.text || ' ')" if conn.dialect.name == "sqlite" else "CONCAT(' ', s.text, ' ')"
    )
    for i, pattern in enumerate(like_patterns(terms)):
        parts.append(f"{padded} LIKE :p{i} ESCAPE '!'")
        params[f"p{i}"] = pattern
    sql = (
        f"SELECT s.message_id, s.sent_ms FROM message_search AS s {hint} "
        f"WHERE {' AND '.join(parts)} ORDER BY s.sent_ms DESC, s.message_id DESC LIMIT {int(limit)}"
    )
    return _run(conn, sql, params, rooms)


def _find(
    conn: Connection,
    rooms: list[str],
    room: str | None,
    terms: list[Term],
    top: Bound | None,
    limit: int,
) -> tuple[list[Any], list[str]]:
    """Up to ``limit`` (message_id, sent_ms) before ``top``, newest first; and the steps.

    1. the newest ``RECENT_DOCS`` documents (all rooms', or the room's) before ``top``;
    2. while that found matches but not a page, the density of matches among the caller's
       documents read so far says how many more of theirs would fill it: (a) read newest
       first again, within ``RECENT_MAX`` index entries in all, or else (b) the caller's
       documents of the time that should hold them, room by room (at most ``ROOMS_MAX``: a
       caller whose rooms are a small share of all). With no match yet, ``PROBE_DOCS`` more
       of the caller's documents, until ``SAMPLE_MIN`` of them say the word is rare;
    3. the full-text index for everything older than what steps 1-2 read."""
    lo = _boundary(conn, room, top, RECENT_DOCS)
    found = _scan(conn, rooms, room, terms, lo, top, limit)
    steps = [f"recent:{len(found)}"]
    if len(found) >= limit or lo is None:
        return found, steps
    read = RECENT_DOCS  # index entries read newest first
    mine = RECENT_DOCS if room is not None else _count(conn, rooms, lo, top)  # caller's docs
    by_rooms = 0  # the caller's documents read room by room
    start = top.sent_ms if top is not None else now_ms()
    while len(found) < limit:
        m = len(found)
        if m == 0 and mine >= SAMPLE_MIN:
            break  # rare among the caller's newest documents: the full-text index is cheap
        need = PROBE_DOCS if m == 0 else int((limit - m) * mine / m * 1.5) + 1
        spread = read / max(mine, 1)  # index entries per document of the caller's
        chunk = max(RECENT_DOCS, int(need * spread))
        if read + chunk <= RECENT_MAX:
            lo2 = _boundary(conn, room, lo, chunk)
            more = _scan(conn, rooms, room, terms, lo2, lo, limit - m)
            got = chunk if room is not None else _count(conn, rooms, lo2, lo)
            read += chunk
            steps.append(f"more_recent:{chunk}:{len(more)}")
        elif room is None and by_rooms + need <= ROOMS_MAX:
            span = max(1, start - lo.sent_ms)
            since = lo.sent_ms - int(span * need / max(mine, 1))
            lo2 = Bound(since)  # inclusive: every document sent at ``since`` or later
            more = _scan_rooms(conn, rooms, terms, since, lo, limit - m)
            got = need  # about that many of the caller's documents
            by_rooms += need
            steps.append(f"rooms:{need}:{len(more)}")
        else:
            break
        found += more
        mine += got
        if lo2 is None:
            return found, steps  # everything before ``top`` was read
        lo = lo2
    if len(found) < limit:
        found += _full_text(conn, rooms, terms, lo, limit - len(found))
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
        found, steps = _find(conn, rooms, room, terms, top, limit + 1)
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
