"""Read state per member and room: the last message read, unread counts, mute.

Shared by the auth service (``GET /api/rooms``, ``POST /api/rooms/{id}/read``,
``PUT /api/rooms/{id}/mute``) and the gateways (``ready``, the ``read`` frame). Plain SQLAlchemy;
callers own the transaction.

Cost model (rooms of 10,000 members): a message writes nothing per member. A member's position
is one row they already have (``memberships.last_read_id`` / ``last_read_ms``), written only
when *they* read, and only forwards (a conditional UPDATE: concurrent reads from several
devices cannot move it back). Unread counts are computed on demand by one range read of the
``(room_id, sent_ms, id)`` index after the position, stopped at ``UNREAD_CAP`` rows, and skipped
outright for a room with no activity since the position (``rooms.last_activity_ms``). They count
text messages from others that are not deleted: never notices, never a deleted message.

The position of a member who never read (``last_read_id`` null) is the moment they joined:
only messages since they became a member are unread (a new member of an old group does not
inherit its whole past as unread).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import (
    ColumnElement,
    Table,
    and_,
    false,
    func,
    literal,
    or_,
    select,
    true,
    tuple_,
    update,
)
from sqlalchemy.orm import Session

from services.common.directory import chunks
from services.common.models import Membership, Message, Room

UNREAD_CAP = 1000  # unread counts stop here (the client shows "999+")
MESSAGES = cast(Table, Message.__table__)
INDEX = "ix_messages_room_time"

Position = tuple[int, str]  # (sent_ms, message id): the history order


@dataclass(frozen=True)
class ReadState:
    room_id: str
    last_read_id: str | None
    last_read_ms: int | None
    joined_ms: int
    muted: bool
    last_activity_ms: int

    @property
    def position(self) -> Position:
        """Where unread starts: after the last message read, else from the join."""
        if self.last_read_id is not None and self.last_read_ms is not None:
            return (self.last_read_ms, self.last_read_id)
        return (self.joined_ms, "")


def is_member(session: Session, room_id: str, user_id: str) -> bool:
    return (
        session.execute(
            select(Membership.room_id).where(
                Membership.room_id == room_id, Membership.user_id == user_id
            )
        ).first()
        is not None
    )


def message_position(session: Session, room_id: str, message_id: str) -> Position | None:
    """(sent_ms, id) of a message of that room; None if it is not one (one primary-key read)."""
    row = session.execute(
        select(Message.sent_ms, Message.id).where(
            Message.id == message_id, Message.room_id == room_id
        )
    ).first()
    return None if row is None else (int(row.sent_ms), str(row.id))


def _after(dialect: str, pos: Position) -> ColumnElement[bool]:
    """``(sent_ms, id) > pos``, spelled the way each engine plans as an index range (as in
    services/history/queries.py: SQLite takes the row value, MariaDB/MySQL the OR form)."""
    s, i = MESSAGES.c.sent_ms, MESSAGES.c.id
    if dialect == "sqlite":
        return tuple_(s, i) > tuple_(literal(pos[0]), literal(pos[1]))
    return or_(s > pos[0], and_(s == pos[0], i > pos[1]))


def unread_count(
    session: Session, room_id: str, user_id: str, pos: Position, cap: int = UNREAD_CAP
) -> int:
    """Text messages of the room after ``pos`` sent by others and not deleted, counted up to
    ``cap`` (notices never count: they tell of the room, nobody wrote them)."""
    dialect = session.get_bind().dialect.name
    inner = (
        select(MESSAGES.c.id)
        .where(
            MESSAGES.c.room_id == room_id,
            _after(dialect, pos),
            MESSAGES.c.sender_id != user_id,
            MESSAGES.c.kind == "text",
            MESSAGES.c.deleted == false(),
        )
        .with_hint(MESSAGES, f"FORCE INDEX ({INDEX})", "mysql")
        .with_hint(MESSAGES, f"FORCE INDEX ({INDEX})", "mariadb")
        .limit(cap)
        .subquery()
    )
    return int(session.execute(select(func.count()).select_from(inner)).scalar_one())


def read_states(
    session: Session, user_id: str, room_ids: Sequence[str] | None = None
) -> dict[str, ReadState]:
    """The user's read state in each of their rooms (or in ``room_ids`` of them)."""
    q = select(
        Membership.room_id,
        Membership.last_read_id,
        Membership.last_read_ms,
        Membership.joined_ms,
        Membership.muted,
        Room.last_activity_ms,
    ).join(Room, Room.id == Membership.room_id)
    q = q.where(Membership.user_id == user_id)
    rows: list[Any] = []
    if room_ids is None:
        rows = list(session.execute(q).all())
    else:
        for part in chunks(list(room_ids)):
            rows.extend(session.execute(q.where(Membership.room_id.in_(part))).all())
    return {
        r.room_id: ReadState(
            r.room_id,
            r.last_read_id,
            None if r.last_read_ms is None else int(r.last_read_ms),
            int(r.joined_ms),
            bool(r.muted),
            int(r.last_activity_ms),
        )
        for r in rows
    }


def unread_counts(session: Session, user_id: str, states: Iterable[ReadState]) -> dict[str, int]:
    """Unread per room; rooms with no activity since the position cost no query."""
    out: dict[str, int] = {}
    for st in states:
        pos = st.position
        if st.last_activity_ms < pos[0]:
            out[st.room_id] = 0
        else:
            out[st.room_id] = unread_count(session, st.room_id, user_id, pos)
    return out


def annotate(
    session: Session, user_id: str, objs: Sequence[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Copies of room objects with the caller's ``last_read``, ``unread`` and ``muted``."""
    states = read_states(session, user_id, [o["id"] for o in objs])
    counts = unread_counts(session, user_id, states.values())
    return [with_state(o, states.get(o["id"]), counts.get(o["id"], 0)) for o in objs]


def with_state(obj: dict[str, Any], st: ReadState | None, unread: int) -> dict[str, Any]:
    return {
        **obj,
        "last_read": st.last_read_id if st is not None else None,
        "unread": unread,
        "muted": st.muted if st is not None else False,
    }


def advance(session: Session, user_id: str, room_id: str, pos: Position) -> bool:
    """Move the member's read position to ``pos`` if that is forwards; True if it moved
    (False: not forwards, or not a member). One conditional UPDATE of the member's own row:
    concurrent reads keep the furthest position whatever their order."""
    ms, mid = pos
    behind = or_(
        Membership.last_read_ms.is_(None),
        Membership.last_read_id.is_(None),
        Membership.last_read_ms < ms,
        and_(Membership.last_read_ms == ms, Membership.last_read_id < mid),
    )
    done = session.execute(
        update(Membership)
        .where(Membership.room_id == room_id, Membership.user_id == user_id, behind)
        .values(last_read_ms=ms, last_read_id=mid)
        .execution_options(synchronize_session=False)
    )
    return getattr(done, "rowcount", 0) == 1


def set_muted(session: Session, user_id: str, room_id: str, muted: bool) -> bool:
    """Mute or unmute the room for the member; False if they are not a member."""
    if not is_member(session, room_id, user_id):
        return False
    session.execute(
        update(Membership)
        .where(Membership.room_id == room_id, Membership.user_id == user_id)
        .values(muted=true() if muted else false())
        .execution_options(synchronize_session=False)
    )
    return True
