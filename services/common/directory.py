"""Room and membership reads/writes shared by the auth service and the gateways.

Plain SQLAlchemy on a ``sqlalchemy.orm.Session``; callers own the transaction. Functions that
change membership stage the matching events in the outbox (same transaction).

Room objects (API.md "Rooms") carry ``member_count`` always and ``members`` only for rooms of
up to ``CONTACT_ROOM_MAX`` members: reading a room costs the same for 10 or 10,000 members.
They also carry ``version``, bumped with every change of the room (events carry it too), and
``who_can_add`` (``owner`` | ``members`` for a group, null for a direct room).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, TypeVar

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from services.common import events
from services.common.ids import iso_ms, new_id, now_ms
from services.common.models import Membership, Room, User
from services.common.outbox import add_events

# rooms of up to this many members list them in room objects, and their members are each
# other's presence contacts (API.md); bigger groups page through GET /api/rooms/{id}/members
CONTACT_ROOM_MAX = 100
IN_CHUNK = 500  # ids per IN (...) list

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    for k in range(0, len(items), size):
        yield items[k : k + size]


def room_objects(session: Session, room_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Room objects by id (Core queries: ~2 ms per 100 rooms, no ORM objects)."""
    ids = list(dict.fromkeys(room_ids))
    owner = aliased(User)
    rows: list[Any] = []
    for part in chunks(ids):
        rows.extend(
            session.execute(
                select(
                    Room.id,
                    Room.kind,
                    Room.name,
                    owner.username,
                    Room.member_count,
                    Room.created_ms,
                    Room.version,
                    Room.who_can_add,
                )
                .outerjoin(owner, owner.id == Room.owner_id)
                .where(Room.id.in_(part))
            ).all()
        )
    small = [r.id for r in rows if r.member_count <= CONTACT_ROOM_MAX]
    by_room: dict[str, list[str]] = {rid: [] for rid in small}
    for part in chunks(small):
        for room_id, username in session.execute(
            select(Membership.room_id, Membership.username).where(Membership.room_id.in_(part))
        ):
            by_room[room_id].append(username)
    out: dict[str, dict[str, Any]] = {}
    for r in rows:
        obj: dict[str, Any] = {
            "id": r.id,
            "kind": r.kind,
            "name": r.name,
            "owner": r.username,
            "member_count": r.member_count,
            # who may add members to a group: "owner" or "members" (null for a direct room)
            "who_can_add": r.who_can_add if r.kind == "group" else None,
        }
        if r.id in by_room:
            obj["members"] = sorted(by_room[r.id])
        obj["created_at"] = iso_ms(r.created_ms)
        obj["version"] = r.version
        out[r.id] = obj
    return out


def room_object(session: Session, room_id: str) -> dict[str, Any] | None:
    return room_objects(session, [room_id]).get(room_id)


def room_ids_of_user(session: Session, user_id: str) -> list[str]:
    """The user's rooms, most recently active first."""
    return list(
        session.execute(
            select(Room.id)
            .join(Membership, Membership.room_id == Room.id)
            .where(Membership.user_id == user_id)
            .order_by(Room.last_activity_ms.desc(), Room.id.desc())
        ).scalars()
    )


def rooms_of_user(session: Session, user_id: str) -> list[dict[str, Any]]:
    """The user's rooms, most recently active first."""
    ids = room_ids_of_user(session, user_id)
    objs = room_objects(session, ids)
    return [objs[i] for i in ids if i in objs]


def begin_snapshot(session: Session) -> None:
    """Make the session's reads one consistent snapshot. InnoDB's REPEATABLE READ does that
    from the first read of a transaction; pysqlite starts no transaction for a SELECT, so each
    read would see the latest commit: start one explicitly (WAL: a read snapshot)."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN")


def membership_snapshot(
    session: Session, user_ids: Sequence[str]
) -> dict[str, tuple[int, list[str]]]:
    """For each user: (membership_seq, room ids), read in one snapshot (``begin_snapshot``):
    every change after ``seq`` comes as an event with a higher ``seq``."""
    out: dict[str, tuple[int, list[str]]] = {}
    for part in chunks(list(user_ids)):
        for uid, seq in session.execute(
            select(User.id, User.membership_seq).where(User.id.in_(part))
        ):
            out[uid] = (int(seq), [])
        for uid, rid in session.execute(
            select(Membership.user_id, Membership.room_id).where(Membership.user_id.in_(part))
        ):
            if uid in out:
                out[uid][1].append(rid)
    return out


def bump_membership_seqs(session: Session, user_ids: Iterable[str]) -> dict[str, int]:
    """``membership_seq += 1`` for each user (rows locked in id order): the new values."""
    ids = sorted(set(user_ids))
    seqs: dict[str, int] = {}
    for part in chunks(ids):
        session.execute(
            update(User)
            .where(User.id.in_(part))
            .values(membership_seq=User.membership_seq + 1)
            .execution_options(synchronize_session=False)
        )
        rows = session.execute(select(User.id, User.membership_seq).where(User.id.in_(part)))
        seqs.update((uid, int(seq)) for uid, seq in rows)
    return seqs


def direct_key(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"{lo}:{hi}"


def get_or_create_direct_room(
    session: Session, user_id: str, other_username: str
) -> tuple[dict[str, Any], bool, list[tuple[str, str, bytes]]]:
    """The direct room of the pair, created if needed (unique even under races), and the
    events a creation staged (also in the outbox; a caller may publish them at once).

    Raises LookupError for an unknown user and ValueError for oneself. Commits.
    """
    other = session.execute(
        select(User).where(User.username == other_username.lower())
    ).scalar_one_or_none()
    if other is None:
        raise LookupError(other_username)
    if other.id == user_id:
        raise ValueError("a direct room needs another user")
    key = direct_key(user_id, other.id)
    existing = session.execute(select(Room.id).where(Room.direct_key == key)).scalar_one_or_none()
    if existing is not None:
        obj = room_object(session, existing)
        assert obj is not None
        return obj, False, []
    me = session.execute(select(User.username).where(User.id == user_id)).scalar_one()
    ms = now_ms()
    room = Room(
        id=new_id(ms),
        kind="direct",
        name=None,
        owner_id=None,
        direct_key=key,
        created_ms=ms,
        last_activity_ms=ms,
        version=1,
        member_count=2,
    )
    try:
        session.add(room)
        session.flush()
        session.add_all(
            [
                Membership(room_id=room.id, user_id=user_id, username=me, joined_ms=ms),
                Membership(
                    room_id=room.id, user_id=other.id, username=other.username, joined_ms=ms
                ),
            ]
        )
        session.flush()
        obj = room_object(session, room.id)
        assert obj is not None
        seqs = bump_membership_seqs(session, (user_id, other.id))
        staged = [events.room_event("joined", uid, seqs[uid], obj) for uid in (user_id, other.id)]
        add_events(session, staged)
        session.commit()
        return obj, True, staged
    except IntegrityError:  # the other side created it at the same moment
        session.rollback()
        existing = session.execute(select(Room.id).where(Room.direct_key == key)).scalar_one()
        obj = room_object(session, existing)
        assert obj is not None
        return obj, False, []


def member_user_ids(session: Session, room_id: str) -> list[str]:
    return list(
        session.execute(select(Membership.user_id).where(Membership.room_id == room_id)).scalars()
    )
