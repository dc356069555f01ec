"""Reading history: keyset pagination on the ``(room_id, sent_ms, id)`` index.

Every page is one index range read of at most ``limit + 1`` entries (the extra one tells
``has_more``), never an OFFSET and never a scan of the room:

- neither cursor: ``room_id = :r ORDER BY sent_ms DESC, id DESC`` (the index read backwards);
- ``before`` the cursor (s, i): ``(sent_ms, id) < (s, i)`` newest first, then reversed;
- ``after`` the cursor: ``(sent_ms, id) > (s, i)`` oldest first.

The keyset condition is written the way each engine turns into a range on all three columns:
SQLite plans the row value ``(sent_ms, id) < (?, ?)`` as such a range; MariaDB/MySQL only use
the row value for the ``room_id`` prefix (and then walk the room from its end), so there it is
spelled ``sent_ms < s OR (sent_ms = s AND id < i)``, which they plan as a range, with
``FORCE INDEX``. (SQLAlchemy renders no table hints for SQLite; its planner picks the index
anyway, and the tests check both plans.)

SQLAlchemy's SQLite compiler prints ``LIMIT ? OFFSET ?`` with an offset of 0 (a no-op).

``around``: the page centred on one message (``fetch_around``): two such range reads, one each
way from it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, cast

import orjson
from sqlalchemy import ColumnElement, Select, Table, and_, literal, or_, select, tuple_
from sqlalchemy.engine import Connection, Engine

from services.common.models import Membership, Message, Room
from services.common.schema import message_object

MESSAGES = cast(Table, Message.__table__)
MEMBERSHIPS = cast(Table, Membership.__table__)
INDEX = "ix_messages_room_time"

Direction = Literal["latest", "before", "after"]


@dataclass(frozen=True)
class Cursor:
    sent_ms: int
    id: str


@dataclass(frozen=True)
class Page:
    messages: list[dict[str, Any]]
    has_more: bool
    has_more_after: bool | None = None  # around=: newer messages beyond the page


class NotMember(Exception):
    """The caller is not in the room (or the room does not exist)."""


class CursorNotFound(Exception):
    """The ``before``/``after`` message is not in this room."""


def _keyset(dialect: str, direction: Direction, cursor: Cursor) -> ColumnElement[bool]:
    s, i = MESSAGES.c.sent_ms, MESSAGES.c.id
    if dialect == "sqlite":
        key = tuple_(literal(cursor.sent_ms), literal(cursor.id))
        return tuple_(s, i) < key if direction == "before" else tuple_(s, i) > key
    if direction == "before":
        return or_(s < cursor.sent_ms, and_(s == cursor.sent_ms, i < cursor.id))
    return or_(s > cursor.sent_ms, and_(s == cursor.sent_ms, i > cursor.id))


def page_query(
    dialect: str, room_id: str, direction: Direction, cursor: Cursor | None, limit: int
) -> Select[Any]:
    t = MESSAGES
    q = select(*MESSAGE_COLUMNS).where(t.c.room_id == room_id)
    if direction != "latest":
        assert cursor is not None
        q = q.where(_keyset(dialect, direction, cursor))
    if direction == "after":
        q = q.order_by(t.c.sent_ms.asc(), t.c.id.asc())
    else:
        q = q.order_by(t.c.sent_ms.desc(), t.c.id.desc())
    q = q.with_hint(t, f"FORCE INDEX ({INDEX})", "mysql")
    q = q.with_hint(t, f"FORCE INDEX ({INDEX})", "mariadb")
    return q.limit(limit + 1)


MESSAGE_COLUMNS = (
    MESSAGES.c.id,
    MESSAGES.c.room_id,
    MESSAGES.c.sender,
    MESSAGES.c.body,
    MESSAGES.c.sent_ms,
    MESSAGES.c.client_msg_id,
    MESSAGES.c.kind,
    MESSAGES.c.notice,
    MESSAGES.c.edited_ms,
    MESSAGES.c.deleted,
)


def message_json(row: Any) -> dict[str, Any]:
    """A ``messages`` row (``MESSAGE_COLUMNS``) as API.md's message object."""
    return message_object(
        row.id,
        row.room_id,
        row.sender,
        None if row.deleted else row.body,
        row.sent_ms,
        row.client_msg_id,
        kind=row.kind,
        edited_ms=row.edited_ms,
        deleted=bool(row.deleted),
        notice=orjson.loads(row.notice) if row.notice else None,
    )


def stored_message(engine: Engine, message_id: str) -> dict[str, Any] | None:
    """The message object of a stored message as history shows it now (None if it is not
    stored): what a gateway answers a retried edit or delete with."""
    with engine.connect() as conn:
        row = conn.execute(select(*MESSAGE_COLUMNS).where(MESSAGES.c.id == message_id)).first()
    return None if row is None else message_json(row)


@dataclass(frozen=True)
class Target:
    """What a gateway checks before it accepts an edit or a delete (``change_target``)."""

    message: dict[str, Any]  # the message object as history shows it now
    sender_id: str
    owner_id: str | None  # the room's owner (None for a direct room)


def change_target(engine: Engine, room_id: str, message_id: str) -> Target | None:
    """The stored message ``message_id`` of room ``room_id`` with its sender's id and the
    room's owner, or None (no such message in that room, or not stored yet)."""
    return _target(engine, message_id, room_id)


def message_target(engine: Engine, message_id: str) -> Target | None:
    """The same for a message of any room (a retried send checks its sender)."""
    return _target(engine, message_id, None)


def _target(engine: Engine, message_id: str, room_id: str | None) -> Target | None:
    rooms = cast(Table, Room.__table__)
    q = (
        select(*MESSAGE_COLUMNS, MESSAGES.c.sender_id, rooms.c.owner_id)
        .select_from(MESSAGES.outerjoin(rooms, rooms.c.id == MESSAGES.c.room_id))
        .where(MESSAGES.c.id == message_id)
    )
    if room_id is not None:
        q = q.where(MESSAGES.c.room_id == room_id)
    with engine.connect() as conn:
        row = conn.execute(q).first()
    if row is None:
        return None
    return Target(message_json(row), row.sender_id, row.owner_id)


def is_member(conn: Connection, room_id: str, user_id: str) -> bool:
    q = select(MEMBERSHIPS.c.room_id).where(
        MEMBERSHIPS.c.room_id == room_id, MEMBERSHIPS.c.user_id == user_id
    )
    return conn.execute(q).first() is not None


def find_cursor(conn: Connection, room_id: str, message_id: str) -> Cursor | None:
    q = select(MESSAGES.c.sent_ms, MESSAGES.c.id).where(
        MESSAGES.c.id == message_id, MESSAGES.c.room_id == room_id
    )
    row = conn.execute(q).first()
    return None if row is None else Cursor(row.sent_ms, row.id)


def fetch_page(
    engine: Engine,
    user_id: str,
    room_id: str,
    *,
    before: str | None = None,
    after: str | None = None,
    limit: int = 50,
) -> Page:
    """One connection, three indexed lookups. Raises NotMember or CursorNotFound."""
    direction: Direction = "before" if before else "after" if after else "latest"
    with engine.connect() as conn:
        if not is_member(conn, room_id, user_id):
            raise NotMember(room_id)
        cursor = None
        if direction != "latest":
            cursor = find_cursor(conn, room_id, before or after or "")
            if cursor is None:
                raise CursorNotFound(before or after)
        query = page_query(conn.dialect.name, room_id, direction, cursor, limit)
        rows = list(conn.execute(query).all())
    has_more = len(rows) > limit
    rows = rows[:limit]
    if direction != "after":
        rows.reverse()
    return Page([message_json(r) for r in rows], has_more)


def fetch_around(engine: Engine, user_id: str, room_id: str, message_id: str, limit: int) -> Page:
    """The page centred on ``message_id``: the message, up to ``(limit - 1) // 2`` older ones
    before it and the rest newer ones after it; a side with fewer gives its room to the other.
    ``has_more``: older messages lie before the page; ``has_more_after``: newer ones after it.
    Raises NotMember or CursorNotFound."""
    with engine.connect() as conn:
        if not is_member(conn, room_id, user_id):
            raise NotMember(room_id)
        cursor = find_cursor(conn, room_id, message_id)
        if cursor is None:
            raise CursorNotFound(message_id)
        dialect = conn.dialect.name
        target = conn.execute(select(*MESSAGE_COLUMNS).where(MESSAGES.c.id == message_id)).one()
        older = list(conn.execute(page_query(dialect, room_id, "before", cursor, limit)).all())
        newer = list(conn.execute(page_query(dialect, room_id, "after", cursor, limit)).all())
    room = limit - 1
    n_older = min(len(older), room // 2)
    n_newer = min(len(newer), room - n_older)
    n_older = min(len(older), room - n_newer)
    rows = [*reversed(older[:n_older]), target, *newer[:n_newer]]
    return Page([message_json(r) for r in rows], len(older) > n_older, len(newer) > n_newer)
