"""Rooms and memberships in plain SQLAlchemy (a ``sqlalchemy.orm.Session``, no Flask), for the
auth service's views and for any other service (the gateway's ``send`` with ``to``).

Reads and the direct room of a pair live in ``services.common.directory`` (shared with the
gateway) and are re-exported here. The group changes below stage their events with
``add_events`` in the caller's transaction; the caller commits, then kicks the outbox relay.
Every change costs the same whatever the room's size (API.md: "a membership change costs the
same for a room of 10 or 10,000 members"):

- a new group: ``joined`` for each member (on the member's own key: they must learn of it),
  and one ``created`` notice;
- a member added: ``joined`` for them, one ``member_joined`` on the room's key, one ``joined``
  notice;
- a member removed (or leaving): ``left`` for them, one ``member_left`` on the room's key, one
  ``removed`` (or ``left``) notice, and ``updated`` on the room's key if the owner changed;
- a group renamed or its ``who_can_add`` changed (``update_room``): ``updated`` on the room's
  key, and a ``renamed`` notice for a new name.

Notices are messages of kind ``notice`` in the room's history (API.md "History"): staged in
the outbox in the same transaction as the change (``events.notice_staged``), after the change's
events, and relayed to the room's history shard (stored once: the notice's id comes from the
room's version) and, through the room's key, to the members online. One notice per change,
whatever the room's size (a group created with 10,000 members: one ``created`` notice).

The room row is locked (``SELECT ... FOR UPDATE``) by every change of a room, so its
``version`` and ``member_count`` move one step at a time, in commit order. When the owner
leaves, the longest-standing remaining member becomes the owner.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from services.auth.validation import canonical_username
from services.common import events
from services.common.directory import (
    CONTACT_ROOM_MAX,
    bump_membership_seqs,
    chunks,
    direct_key,
    get_or_create_direct_room,
    room_object,
    room_objects,
    rooms_of_user,
)
from services.common.ids import new_id, now_ms
from services.common.models import Membership, Room, User
from services.common.outbox import add_events

__all__ = [
    "CONTACT_ROOM_MAX",
    "MAX_ROOM_NAME",
    "InvalidChange",
    "NotAllowed",
    "RoomNotFound",
    "UserNotFound",
    "add_member",
    "create_group",
    "direct_key",
    "get_or_create_direct_room",
    "members_page",
    "remove_member",
    "room_object",
    "room_objects",
    "rooms_of_user",
    "update_room",
]

MAX_ROOM_NAME = 100


class RoomNotFound(LookupError):
    """No such room, or the caller is not in it (the same answer: no existence leak)."""


class UserNotFound(LookupError):
    def __init__(self, usernames: Iterable[str]) -> None:
        self.usernames = sorted(set(usernames))
        super().__init__(", ".join(self.usernames))


class NotAllowed(PermissionError):
    """Only the owner removes others, changes the group, or adds members where
    ``who_can_add`` is ``owner``."""


WHO_CAN_ADD = ("owner", "members")


def _notice(
    room_id: str,
    version: int,
    event: events.NoticeEvent,
    ms: int,
    *,
    username: str | None,
    by: str | None,
    name: str | None = None,
) -> tuple[str, str, bytes]:
    """The notice of a change for the outbox (the room's ``version`` after the change)."""
    entry = events.notice_entry(
        room_id, version, event, username=username, by=by, name=name, sent_ms=ms
    )
    return events.notice_staged(entry)


def _username(session: Session, user_id: str) -> str:
    return str(session.execute(select(User.username).where(User.id == user_id)).scalar_one())


class InvalidChange(ValueError):
    """A change the room does not allow (a direct room never changes; a full group)."""


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
    for part in chunks(list(wanted)):
        rows = session.execute(select(User).where(User.username.in_(part))).scalars()
        found.update((u.username, u) for u in rows)
    unknown.extend(name for name in wanted if name not in found)
    return found, unknown


def _member_room(session: Session, room_id: str, user_id: str, *, lock: bool = False) -> Room:
    """The room, if the user is a member; RoomNotFound otherwise. ``lock``: for a change."""
    if not isinstance(room_id, str) or len(room_id) > 26:
        raise RoomNotFound(room_id)
    q = (
        select(Room)
        .join(Membership, Membership.room_id == Room.id)
        .where(Room.id == room_id, Membership.user_id == user_id)
    )
    if lock:
        q = q.with_for_update()
    room = session.execute(q).scalar_one_or_none()
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


def members_page(
    session: Session, room_id: str, user_id: str, after: str | None, limit: int
) -> tuple[list[str], str | None]:
    """A page of the room's usernames in order, after ``after``; and the cursor of the next
    page (None at the end). One index range read. RoomNotFound for non-members."""
    _member_room(session, room_id, user_id)
    q = select(Membership.username).where(Membership.room_id == room_id)
    if after:
        q = q.where(Membership.username > after)
    names = list(session.execute(q.order_by(Membership.username).limit(limit + 1)).scalars())
    more = len(names) > limit
    names = names[:limit]
    return names, (names[-1] if more and names else None)


def create_group(
    session: Session,
    owner_id: str,
    name: str,
    usernames: list[object],
    ms: int | None = None,
    *,
    max_members: int = 10_000,
) -> dict[str, Any]:
    """A new group room owned by ``owner_id`` with the named members (and the owner).

    Raises UserNotFound naming every unknown username, InvalidChange past ``max_members``.
    Does not commit. Costs one small event per member and a few multi-row statements."""
    ms = now_ms() if ms is None else ms
    found, unknown = _users_by_name(session, usernames)
    if unknown:
        raise UserNotFound(unknown)
    owner_name = session.execute(select(User.username).where(User.id == owner_id)).scalar_one()
    names = {u.id: u.username for u in found.values()}
    names[owner_id] = owner_name
    member_ids = [owner_id, *sorted(set(names) - {owner_id})]
    if len(member_ids) > max_members:
        raise InvalidChange(f"a group has at most {max_members} members")
    room = Room(
        id=new_id(ms),
        kind="group",
        name=name,
        owner_id=owner_id,
        direct_key=None,
        created_ms=ms,
        last_activity_ms=ms,
        version=1,
        member_count=len(member_ids),
    )
    session.add(room)
    session.flush()
    rows = [
        {"room_id": room.id, "user_id": uid, "username": names[uid], "joined_ms": ms}
        for uid in member_ids
    ]
    for part in chunks(rows, 1000):
        session.execute(insert(Membership), list(part))
    seqs = bump_membership_seqs(session, member_ids)
    obj = room_object(session, room.id)
    assert obj is not None
    staged = [events.room_event("joined", uid, seqs[uid], obj) for uid in member_ids]
    staged.append(_notice(room.id, room.version, "created", ms, username=None, by=owner_name))
    add_events(session, staged)
    return obj


def add_member(
    session: Session,
    room_id: str,
    actor_id: str,
    username: object,
    ms: int | None = None,
    *,
    max_members: int = 10_000,
) -> tuple[dict[str, Any], bool]:
    """Add a user to a group the actor is in: (room object, whether it changed).

    Raises RoomNotFound, InvalidChange (direct room, full group), NotAllowed (``who_can_add``
    is ``owner`` and the actor is not), UserNotFound. Does not commit."""
    ms = now_ms() if ms is None else ms
    room = _member_room(session, room_id, actor_id, lock=True)
    if room.kind != "group":
        raise InvalidChange("a direct room has exactly its two members")
    if room.who_can_add == "owner" and room.owner_id != actor_id:
        raise NotAllowed("only the owner adds members to this group")
    found, unknown = _users_by_name(session, [username])
    if unknown:
        raise UserNotFound(unknown)
    user = next(iter(found.values()))
    already = session.execute(
        select(Membership.user_id).where(
            Membership.room_id == room.id, Membership.user_id == user.id
        )
    ).first()
    if already is not None:
        obj = room_object(session, room.id)
        assert obj is not None
        return obj, False
    if room.member_count >= max_members:
        raise InvalidChange(f"a group has at most {max_members} members")
    session.add(Membership(room_id=room.id, user_id=user.id, username=user.username, joined_ms=ms))
    room.member_count += 1
    room.version += 1
    session.flush()
    seq = bump_membership_seqs(session, [user.id])[user.id]
    obj = room_object(session, room.id)
    assert obj is not None
    add_events(
        session,
        [
            events.room_event("joined", user.id, seq, obj),
            events.member_event(
                "member_joined", room.id, room.version, room.member_count, user.username, user.id
            ),
            _notice(
                room.id,
                room.version,
                "joined",
                ms,
                username=user.username,
                by=_username(session, actor_id),
            ),
        ],
    )
    return obj, True


def remove_member(
    session: Session, room_id: str, actor_id: str, username: object, ms: int | None = None
) -> dict[str, Any]:
    """Remove a member (the owner removes anyone; anyone removes themselves): the room after.

    Raises RoomNotFound, InvalidChange (direct room), NotAllowed, UserNotFound (not a member).
    Does not commit."""
    ms = now_ms() if ms is None else ms
    room = _member_room(session, room_id, actor_id, lock=True)
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
    room.member_count -= 1
    room.version += 1
    left_version = room.version
    owner_changed = False
    if room.owner_id == target.id:
        heir = session.execute(
            select(Membership.user_id)
            .where(Membership.room_id == room.id)
            .order_by(Membership.joined_ms, Membership.user_id)
            .limit(1)
        ).scalar_one_or_none()
        room.owner_id = heir
        room.version += 1  # a second change: "updated" carries its own version
        owner_changed = True
    session.flush()
    seq = bump_membership_seqs(session, [target.id])[target.id]
    obj = room_object(session, room.id)
    assert obj is not None
    itself = target.id == actor_id
    staged = [
        events.room_event("left", target.id, seq, obj),
        events.member_event(
            "member_left", room.id, left_version, room.member_count, target.username, target.id
        ),
        _notice(
            room.id,
            left_version,
            "left" if itself else "removed",
            ms,
            username=target.username,
            by=target.username if itself else _username(session, actor_id),
        ),
    ]
    if owner_changed:
        staged.append(events.room_updated(obj))
    add_events(session, staged)
    return obj


def update_room(
    session: Session,
    room_id: str,
    actor_id: str,
    *,
    name: str | None = None,
    who_can_add: str | None = None,
    ms: int | None = None,
) -> tuple[dict[str, Any], bool]:
    """Rename a group and/or set who may add members (its owner only): (room object, whether
    it changed). A change bumps the room's version once and stages ``updated`` on the room's
    key (and a ``renamed`` notice for a new name); the same values again change nothing.

    ``name`` must be valid already (the caller checks it), ``who_can_add`` one of
    ``WHO_CAN_ADD``. Raises RoomNotFound (not a member, or a direct room: it has no settings)
    and NotAllowed (not the owner). Does not commit."""
    ms = now_ms() if ms is None else ms
    room = _member_room(session, room_id, actor_id, lock=True)
    if room.kind != "group":
        raise RoomNotFound(room_id)
    if room.owner_id != actor_id:
        raise NotAllowed("only the group's owner changes its name and settings")
    if who_can_add is not None and who_can_add not in WHO_CAN_ADD:
        raise InvalidChange("'who_can_add' must be 'owner' or 'members'")
    renamed = name is not None and name != room.name
    regated = who_can_add is not None and who_can_add != room.who_can_add
    if not renamed and not regated:
        obj = room_object(session, room.id)
        assert obj is not None
        return obj, False
    if name is not None and renamed:
        room.name = name
    if who_can_add is not None and regated:
        room.who_can_add = who_can_add
    room.version += 1
    session.flush()
    obj = room_object(session, room.id)
    assert obj is not None
    staged = [events.room_updated(obj)]
    if renamed:
        staged.append(
            _notice(
                room.id,
                room.version,
                "renamed",
                ms,
                username=None,
                by=_username(session, actor_id),
                name=name,
            )
        )
    add_events(session, staged)
    return obj, True
