"""Room and membership reads/writes shared by the auth service and the gateways.

Plain SQLAlchemy on a ``sqlalchemy.orm.Session``; callers own the transaction. Functions that
change membership stage the matching events in the outbox (same transaction).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common import events
from services.common.ids import iso_ms, new_id, now_ms
from services.common.models import Membership, Room, User
from services.common.outbox import add_events


def room_objects(session: Session, room_ids: list[str]) -> dict[str, dict[str, Any]]:
    if not room_ids:
        return {}
    rooms = session.execute(select(Room).where(Room.id.in_(room_ids))).scalars().all()
    members = session.execute(
        select(Membership.room_id, User.username, User.id)
        .join(User, User.id == Membership.user_id)
        .where(Membership.room_id.in_(room_ids))
    ).all()
    owners = {r.owner_id for r in rooms if r.owner_id}
    owner_names = (
        dict(
            session.execute(select(User.id, User.username).where(User.id.in_(owners)))
            .tuples()
            .all()
        )
        if owners
        else {}
    )
    by_room: dict[str, list[str]] = {}
    for room_id, username, _uid in members:
        by_room.setdefault(room_id, []).append(username)
    out: dict[str, dict[str, Any]] = {}
    for r in rooms:
        out[r.id] = {
            "id": r.id,
            "kind": r.kind,
            "name": r.name,
            "owner": owner_names.get(r.owner_id) if r.owner_id else None,
            "members": sorted(by_room.get(r.id, [])),
            "created_at": iso_ms(r.created_ms),
        }
    return out


def room_object(session: Session, room_id: str) -> dict[str, Any] | None:
    return room_objects(session, [room_id]).get(room_id)


def rooms_of_user(session: Session, user_id: str) -> list[dict[str, Any]]:
    """The user's rooms, most recently active first."""
    ids = (
        session.execute(
            select(Room.id)
            .join(Membership, Membership.room_id == Room.id)
            .where(Membership.user_id == user_id)
            .order_by(Room.last_activity_ms.desc(), Room.id.desc())
        )
        .scalars()
        .all()
    )
    objs = room_objects(session, list(ids))
    return [objs[i] for i in ids if i in objs]


def direct_key(a: str, b: str) -> str:
    lo, hi = sorted((a, b))
    return f"{lo}:{hi}"


def get_or_create_direct_room(
    session: Session, user_id: str, other_username: str
) -> tuple[dict[str, Any], bool]:
    """The direct room of the pair, created if needed (unique even under races).

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
        return obj, False
    ms = now_ms()
    room = Room(
        id=new_id(ms),
        kind="direct",
        name=None,
        owner_id=None,
        direct_key=key,
        created_ms=ms,
        last_activity_ms=ms,
    )
    try:
        session.add(room)
        session.flush()
        session.add_all(
            [
                Membership(room_id=room.id, user_id=user_id, joined_ms=ms),
                Membership(room_id=room.id, user_id=other.id, joined_ms=ms),
            ]
        )
        session.flush()
        obj = room_object(session, room.id)
        assert obj is not None
        add_events(session, [events.room_event("joined", uid, obj) for uid in (user_id, other.id)])
        session.commit()
        return obj, True
    except IntegrityError:  # the other side created it at the same moment
        session.rollback()
        existing = session.execute(select(Room.id).where(Room.direct_key == key)).scalar_one()
        obj = room_object(session, existing)
        assert obj is not None
        return obj, False


def member_user_ids(session: Session, room_id: str) -> list[str]:
    return list(
        session.execute(select(Membership.user_id).where(Membership.room_id == room_id))
        .scalars()
        .all()
    )
