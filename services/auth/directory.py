"""Rooms and memberships in plain SQLAlchemy (a ``sqlalchemy.orm.Session``, no Flask), for the
auth service's views and for any other service (the gateway's ``send`` with ``to``).

Reads and the direct room of a pair live in ``services.common.directory`` (shared with the
gateway) and are re-exported here. The group changes below stage their events with
``add_events`` in the caller's transaction; the caller commits, then kicks the outbox relay:

- a new group: ``joined`` for every member;
- a member added: ``joined`` for them, ``updated`` for everyone already in;
- a member removed (or leaving): ``left`` for them, ``updated`` for those who remain.

When the owner leaves, the longest-standing remaining member becomes the owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from services.auth.validation import canonical_username
from services.common import events
from services.common.directory import (
    direct_key,
    get_or_create_direct_room,
    member_user_ids,
    room_object,
    room_objects,
    rooms_of_user,
)
from services.common.ids import new_id, now_ms
from services.common.models import Membership, Room, User
from services.common.outbox import add_events

__all__ = [
    "MAX_GROUP_MEMBERS",
    "MAX_ROOM_NAME",
    "InvalidChange",
    "NotAllowed",
    "RoomNotFound",
    "UserNotFound",
    "add_member",
    "create_group",
    "direct_key",
    "get_or_create_direct_room",
    "member_user_ids",
    "remove_member",
    "room_object",
    "room_objects",
    "rooms_of_user",
]

MAX_ROOM_NAME = 100
MAX_GROUP_MEMBERS = 1000


class RoomNotFound(LookupError):
    """No such room, or the caller is not in it (the same answer: no existence leak)."""


class UserNotFound(LookupError):
    def __init__(self, usernames: Iterable[str]) -> None:
        self.usernames = sorted(set(usernames))
        super().__init__(", ".join(self.usernames))


class NotAllowed(PermissionError):
    """Only the owner removes others."""


class InvalidChange(ValueError):
    """A change the room's kind does not allow (a direct room never changes)."""


def _users_by_name(session: Session, names: Iterable[object]) -> tuple[dict[str, User], list[str]]:
    wanted: dict[str, str] = {}  # canonical -> as given
    unknown: list[str] = []
    for raw in names:
        name = canonical_username(raw)
        if name is None:
            unknown.append(str(raw)[:64])
        else:
            wanted.setdefault(name, str(raw))
    found: dict[str, User] = {}
    if wanted:
        rows = session.execute(select(User).where(User.username.in_(list(wanted)))).scalars()
        found = {u.username: u for u in rows}
    unknown.extend(name for name in wanted if name not in found)
    return found, unknown


def _member_room(session: Session, room_id: str, user_id: str) -> Room:
    """The room, if the user is a member; RoomNotFound otherwise."""
    if not isinstance(room_id, str) or len(room_id) > 26:
        raise RoomNotFound(room_id)
    room = session.execute(
        select(Room)
        .join(Membership, Membership.room_id == Room.id)
        .where(Room.id == room_id, Membership.user_id == user_id)
    ).scalar_one_or_none()
    if room is None:
        raise RoomNotFound(room_id)
    return room


def member_room_object(session: Session, room_id: str, user_id: str) -> dict[str, Any]:
    """The room object for one of its members; RoomNotFound for anyone else."""
    room = _member_room(session, room_id, user_id)
    obj = room_object(session, room.id)
    if obj is None:
        raise RoomNotFound(room_id)
    return obj


def create_group(
    session: Session,
    owner_id: str,
    name: str,
    usernames: list[object],
    ms: int | None = None,
) -> dict[str, Any]:
    """A new group room owned by ``owner_id`` with the named members (and the owner).

    Raises UserNotFound naming every unknown username. Does not commit."""
    ms = now_ms() if ms is None else ms
    found, unknown = _users_by_name(session, usernames)
    if unknown:
        raise UserNotFound(unknown)
    member_ids = [owner_id, *sorted({u.id for u in found.values()} - {owner_id})]
    room = Room(
        id=new_id(ms),
        kind="group",
        name=name,
        owner_id=owner_id,
        direct_key=None,
        created_ms=ms,
        last_activity_ms=ms,
    )
    session.add(room)
    session.flush()
    session.add_all(Membership(room_id=room.id, user_id=uid, joined_ms=ms) for uid in member_ids)
    session.flush()
    obj = room_object(session, room.id)
    assert obj is not None
    add_events(session, [events.room_event("joined", uid, obj) for uid in member_ids])
    return obj


def add_member(
    session: Session, room_id: str, actor_id: str, username: object, ms: int | None = None
) -> tuple[dict[str, Any], bool]:
    """Add a user to a group the actor is in: (room object, whether it changed).

    Raises RoomNotFound, InvalidChange (direct room), UserNotFound. Does not commit."""
    ms = now_ms() if ms is None else ms
    room = _member_room(session, room_id, actor_id)
    if room.kind != "group":
        raise InvalidChange("a direct room has exactly its two members")
    found, unknown = _users_by_name(session, [username])
    if unknown:
        raise UserNotFound(unknown)
    user = next(iter(found.values()))
    before = set(member_user_ids(session, room.id))
    if user.id in before:
        obj = room_object(session, room.id)
        assert obj is not None
        return obj, False
    session.add(Membership(room_id=room.id, user_id=user.id, joined_ms=ms))
    session.flush()
    obj = room_object(session, room.id)
    assert obj is not None
    staged = [events.room_event("joined", user.id, obj)]
    staged += [events.room_event("updated", uid, obj) for uid in sorted(before)]
    add_events(session, staged)
    return obj, True


def remove_member(
    session: Session, room_id: str, actor_id: str, username: object
) -> dict[str, Any]:
    """Remove a member (the owner removes anyone; anyone removes themselves): the room after.

    Raises RoomNotFound, InvalidChange (direct room), NotAllowed, UserNotFound (not a member).
    Does not commit."""
    room = _member_room(session, room_id, actor_id)
    if room.kind != "group":
        raise InvalidChange("a direct room has exactly its two members")
    name = canonical_username(username)
    target = None
    if name is not None:
        target = session.execute(select(User).where(User.username == name)).scalar_one_or_none()
    if (target is None or target.id != actor_id) and room.owner_id != actor_id:
        raise NotAllowed("only the owner removes other members")
    if target is None:
        raise UserNotFound([str(username)[:64]])
    gone = session.execute(
        delete(Membership).where(Membership.room_id == room.id, Membership.user_id == target.id)
    )
    if getattr(gone, "rowcount", 0) != 1:
        raise UserNotFound([target.username])
    if room.owner_id == target.id:
        heir = session.execute(
            select(Membership.user_id)
            .where(Membership.room_id == room.id)
            .order_by(Membership.joined_ms, Membership.user_id)
            .limit(1)
        ).scalar_one_or_none()
        room.owner_id = heir
    session.flush()
    obj = room_object(session, room.id)
    assert obj is not None
    staged = [events.room_event("left", target.id, obj)]
    staged += [
        events.room_event("updated", uid, obj) for uid in sorted(member_user_ids(session, room.id))
    ]
    add_events(session, staged)
    return obj
