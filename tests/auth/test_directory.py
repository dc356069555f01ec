"""The plain-SQLAlchemy room functions the gateway uses (no Flask): results and staged events."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.auth import directory
from services.common.ids import new_id
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


def test_get_or_create_direct_room(session: Session) -> None:
    alice, bob = uid(session, "alice"), uid(session, "bob")
    room, created = directory.get_or_create_direct_room(session, alice, "Bob")
    assert created
    assert room["kind"] == "direct" and room["members"] == ["alice", "bob"]
    events = staged(session)
    assert sorted(key for key, _ in events) == sorted([f"user.{alice}", f"user.{bob}"])
    assert all(body["event"] == "joined" and body["room"] == room for _, body in events)
    again, created_again = directory.get_or_create_direct_room(session, bob, "alice")
    assert (again, created_again) == (room, False)
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
    assert [(b["event"], b["user_id"]) for _, b in staged(session)] == [
        ("joined", alice),
        ("joined", bob),
    ]
    with pytest.raises(directory.UserNotFound) as err:
        directory.create_group(session, alice, "x", ["bob", "zed", "yan"])
    assert err.value.usernames == ["yan", "zed"]
    session.rollback()
    after, changed = directory.add_member(session, room["id"], bob, "carol", ms=2000)
    session.commit()
    assert changed and after["members"] == ["alice", "bob", "carol"]
    assert [(b["event"], b["user_id"]) for _, b in staged(session)][2:] == [
        ("joined", carol),
        ("updated", min(alice, bob)),
        ("updated", max(alice, bob)),
    ]
    with pytest.raises(directory.NotAllowed):
        directory.remove_member(session, room["id"], bob, "carol")
    session.rollback()
    with pytest.raises(directory.RoomNotFound):
        directory.member_room_object(session, room["id"], uid(session, "carol") + "x")
    final = directory.remove_member(session, room["id"], alice, "alice")
    session.commit()
    assert final["members"] == ["bob", "carol"] and final["owner"] == "bob"
    last = [(b["event"], b["user_id"]) for _, b in staged(session)][5:]
    assert last[0] == ("left", alice)
    assert sorted(last[1:]) == sorted([("updated", bob), ("updated", carol)])
