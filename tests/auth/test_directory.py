"""The plain-SQLAlchemy room functions the gateway uses (no Flask): results and staged events."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import directory
from services.common.ids import new_id, notice_id
from services.common.models import Outbox, User
from tests.auth.conftest import Database


@pytest.fixture
def session(database: Database) -> Iterator[Session]:
    with Session(database.engine) as s:
        for name in ("alice", "bob", "carol"):
            s.add(User(id=new_id(), username=name, password_hash="x", created_ms=1))
        s.commit()
        yield s


def uid(session: Session, name: str) -> str:
    return session.execute(select(User.id).where(User.username == name)).scalar_one()


def staged(session: Session) -> list[tuple[str, dict[str, object]]]:
    rows = session.execute(select(Outbox.routing_key, Outbox.body).order_by(Outbox.id)).all()
    return [(key, orjson.loads(body)) for key, body in rows]


def notice(room_id: str, item: tuple[str, dict[str, Any]]) -> tuple[str, ...]:
    """A staged notice: (event, username, by, name), checked to be one for the room's history
    (the relay picks the shard) with the id its version gives."""
    key, body = item
    assert key == f"room.{room_id}.msg" and body["type"] == "message", item
    msg = body["message"]
    assert msg["kind"] == "notice" and msg["body"] is None and msg["room"] == room_id
    assert body["sender_id"] == room_id  # no user's send can take a notice's id
    assert msg["id"] == notice_id(room_id, int(msg["client_msg_id"].split(":")[1]))
    n = msg["notice"]
    return (n["event"], n["username"], n["by"], n["name"])


def test_get_or_create_direct_room(session: Session) -> None:
    alice, bob = uid(session, "alice"), uid(session, "bob")
    room, created, published = directory.get_or_create_direct_room(session, alice, "Bob")
    assert created
    assert room["kind"] == "direct" and room["members"] == ["alice", "bob"]
    assert room["member_count"] == 2 and room["version"] == 1
    events = staged(session)
    assert sorted(key for key, _ in events) == sorted([f"user.{alice}", f"user.{bob}"])
    assert all(body["event"] == "joined" and body["room"] == room for _, body in events)
    assert all(body["seq"] == 1 for _, body in events)
    assert [orjson.loads(b) for _, _, b in published] == [b for _, b in events]
    again, created_again, none = directory.get_or_create_direct_room(session, bob, "alice")
    assert (again, created_again, none) == (room, False, [])
    assert len(staged(session)) == 2
    assert directory.room_object(session, room["id"]) == room
    assert directory.room_object(session, "nope") is None
    assert directory.rooms_of_user(session, alice) == [room]
    assert directory.rooms_of_user(session, uid(session, "carol")) == []


def test_direct_room_errors(session: Session) -> None:
    alice = uid(session, "alice")
    with pytest.raises(LookupError):
        directory.get_or_create_direct_room(session, alice, "nobody")
    with pytest.raises(ValueError):
        directory.get_or_create_direct_room(session, alice, "ALICE")


def test_group_changes_stage_their_events(session: Session) -> None:
    alice, bob, carol = (uid(session, n) for n in ("alice", "bob", "carol"))
    room = directory.create_group(session, alice, "team", ["bob"], ms=1000)
    session.commit()
    assert room["owner"] == "alice" and room["members"] == ["alice", "bob"]
    assert room["member_count"] == 2 and room["version"] == 1
    assert [(b["event"], b["user_id"], b["seq"]) for _, b in staged(session)[:2]] == [
        ("joined", alice, 1),
        ("joined", bob, 1),
    ]
    # one notice for the creation, however many members
    assert notice(room["id"], staged(session)[2]) == ("created", None, "alice", None)
    assert len(staged(session)) == 3
    with pytest.raises(directory.UserNotFound) as err:
        directory.create_group(session, alice, "x", ["bob", "zed", "yan"])
    assert err.value.usernames == ["yan", "zed"]
    session.rollback()
    after, changed = directory.add_member(session, room["id"], bob, "carol", ms=2000)
    session.commit()
    assert changed and after["members"] == ["alice", "bob", "carol"]
    assert after["member_count"] == 3 and after["version"] == 2
    # one event for carol, one on the room's key for everyone else: not one per member
    assert notice(room["id"], staged(session)[5]) == ("joined", "carol", "bob", None)
    assert staged(session)[3:5] == [
        (
            f"user.{carol}",
            {"type": "room", "event": "joined", "user_id": carol, "seq": 1, "room": after},
        ),
        (
            f"room.{room['id']}.member",
            {
                "type": "member",
                "event": "member_joined",
                "room_id": room["id"],
                "version": 2,
                "member_count": 3,
                "username": "carol",
                "user_id": carol,
            },
        ),
    ]
    again, changed_again = directory.add_member(session, room["id"], bob, "carol")
    assert (again, changed_again) == (after, False) and len(staged(session)) == 6
    with pytest.raises(directory.NotAllowed):
        directory.remove_member(session, room["id"], bob, "carol")
    session.rollback()
    with pytest.raises(directory.RoomNotFound):
        directory.member_room_object(session, room["id"], uid(session, "carol") + "x")
    final = directory.remove_member(session, room["id"], alice, "alice")
    session.commit()
    assert final["members"] == ["bob", "carol"] and final["owner"] == "bob"
    assert final["member_count"] == 2 and final["version"] == 4  # left, then a new owner
    last = staged(session)[6:]
    assert notice(room["id"], last[2]) == ("left", "alice", "alice", None)
    del last[2]
    assert [(k, b["event"]) for k, b in last] == [
        (f"user.{alice}", "left"),
        (f"room.{room['id']}.member", "member_left"),
        (f"room.{room['id']}.member", "updated"),
    ]
    assert last[0][1]["seq"] == 2 and last[1][1]["version"] == 3
    assert last[2][1]["version"] == 4 and last[2][1]["room"] == final


def test_members_page_by_name(session: Session) -> None:
    alice = uid(session, "alice")
    room = directory.create_group(session, alice, "team", ["bob", "carol"])
    session.commit()
    assert directory.members_page(session, room["id"], alice, None, 2) == (["alice", "bob"], "bob")
    assert directory.members_page(session, room["id"], alice, "bob", 2) == (["carol"], None)
    with pytest.raises(directory.RoomNotFound):
        directory.members_page(session, room["id"], uid(session, "carol") + "x", None, 2)


def test_a_group_past_the_contact_size_leaves_members_out(session: Session) -> None:
    """Room objects of groups over 100 members carry member_count, not the list; one change
    stages two small events whatever the size."""
    alice = uid(session, "alice")
    names = [f"m{i:03d}" for i in range(120)]
    for name in names:
        session.add(User(id=new_id(), username=name, password_hash="x", created_ms=1))
    session.commit()
    room = directory.create_group(session, alice, "all", names[:100])
    session.commit()
    assert room["member_count"] == 101 and "members" not in room
    assert len(staged(session)) == 102  # a joined event per member, one notice
    assert max(len(orjson.dumps(b)) for _, b in staged(session)) < 400
    after, _ = directory.add_member(session, room["id"], alice, names[100])
    session.commit()
    assert after["member_count"] == 102 and "members" not in after
    assert len(staged(session)) == 105
    with pytest.raises(directory.InvalidChange):
        directory.add_member(session, room["id"], alice, names[101], max_members=102)
    session.rollback()
    with pytest.raises(directory.InvalidChange):
        directory.create_group(session, alice, "x", names[:10], max_members=10)
