"""Read state per member and room, through the auth service (issue 16): ``last_read`` and
``unread`` in the caller's room objects, ``POST /api/rooms/{id}/read`` (forwards only),
``PUT /api/rooms/{id}/mute``, the events they stage, and what it costs. Both databases.

Messages are written straight into ``messages`` the way the history writer does (the row and
the room's ``last_activity_ms``): these tests are about reading that table."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common import readstate
from services.common.db import make_engine
from services.common.models import Membership, Message, Room
from tests.auth.conftest import Api, Database, FakeClock, Relay, error_code, wait_for
from tests.auth.test_migrations import config, empty_url, schema_diff  # noqa: F401

_n = itertools.count()


def post(engine: Engine, room: str, sender: dict[str, Any], sent_ms: int, n: int = 1) -> list[str]:
    """n messages from ``sender`` at ``sent_ms`` (the same millisecond: ordered by id), as the
    history writer stores them. Their ids."""
    rows = []
    for _ in range(n):
        k = next(_n)
        rows.append(
            {
                "id": f"m{k:025d}",
                "room_id": room,
                "sender_id": sender["id"],
                "sender": sender["username"],
                "body": f"message {k}",
                "sent_ms": sent_ms,
                "client_msg_id": f"c{k}",
                "written_ms": sent_ms,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(Message), rows)
        conn.execute(
            update(Room)
            .where(Room.id == room, Room.last_activity_ms < sent_ms)
            .values(last_activity_ms=sent_ms)
        )
    return [r["id"] for r in rows]


def joined_ms(engine: Engine, room: str, user: dict[str, Any]) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(Membership.joined_ms).where(
                    Membership.room_id == room, Membership.user_id == user["id"]
                )
            ).scalar_one()
        )


@pytest.fixture
def people(api: Api) -> dict[str, dict[str, Any]]:
    return {name: api.user(name) for name in ("alice", "bob", "carol")}


@pytest.fixture
def group(api: Api, people: dict[str, dict[str, Any]]) -> str:
    r = api.post(
        "/api/rooms", {"name": "team", "members": ["bob"]}, people["alice"]["access_token"]
    )
    assert r.status_code == 201
    return str(r.json["id"])


def room_of(api: Api, user: dict[str, Any], room: str) -> dict[str, Any]:
    r = api.get(f"/api/rooms/{room}", user["access_token"])
    assert r.status_code == 200, r.get_json()
    listed = api.get("/api/rooms", user["access_token"]).get_json()["rooms"]
    same = next(x for x in listed if x["id"] == room)
    assert same == r.get_json()  # the list and the single room agree
    return dict(r.get_json())


def read(api: Api, user: dict[str, Any], room: str, mid: str) -> Any:
    return api.post(f"/api/rooms/{room}/read", {"message_id": mid}, user["access_token"])


def test_a_fresh_member_counts_messages_since_joining(
    api: Api,
    database: Database,
    people: dict[str, dict[str, Any]],
    group: str,
    clock: FakeClock,
) -> None:
    alice, bob, carol = people["alice"], people["bob"], people["carol"]
    t0 = joined_ms(database.engine, group, alice)
    post(database.engine, group, alice, t0 + 10, 3)
    post(database.engine, group, bob, t0 + 20, 2)
    a, b = room_of(api, alice, group), room_of(api, bob, group)
    assert (a["last_read"], a["unread"], a["muted"]) == (None, 2, False)  # bob's two
    assert (b["last_read"], b["unread"]) == (None, 3)  # alice's three, never their own
    # carol joins later: what was said before is not unread for her
    clock.advance(1)
    r = api.post(f"/api/rooms/{group}/members", {"username": "carol"}, alice["access_token"])
    assert r.status_code == 200
    assert r.get_json()["unread"] == 2  # the answer to the caller (alice): her own state
    c_join = joined_ms(database.engine, group, carol)
    assert room_of(api, carol, group)["unread"] == 0
    post(database.engine, group, alice, c_join + 5)
    assert room_of(api, carol, group)["unread"] == 1


def test_read_moves_forwards_only(
    api: Api, database: Database, people: dict[str, dict[str, Any]], group: str, relay: Relay
) -> None:
    alice, bob = people["alice"], people["bob"]
    t0 = joined_ms(database.engine, group, bob)
    early = post(database.engine, group, alice, t0 + 1, 2)
    same_ms = post(database.engine, group, alice, t0 + 2, 3)  # one millisecond: by id
    late = post(database.engine, group, alice, t0 + 3, 1)
    assert room_of(api, bob, group)["unread"] == 6
    assert read(api, bob, group, same_ms[1]).status_code == 204
    room = room_of(api, bob, group)
    assert (room["last_read"], room["unread"]) == (same_ms[1], 2)
    assert read(api, bob, group, early[0]).status_code == 204  # backwards: no effect
    assert read(api, bob, group, same_ms[0]).status_code == 204
    assert room_of(api, bob, group)["last_read"] == same_ms[1]
    assert read(api, bob, group, late[0]).status_code == 204
    assert room_of(api, bob, group)["unread"] == 0
    # alice's own state is hers: untouched
    assert room_of(api, alice, group)["last_read"] is None
    # the caller's connections hear each move forwards, once, on the user's own key
    moves = wait_for(lambda: relay.bus.events("read") if len(relay.bus.events("read")) >= 2 else [])
    assert [(e["user_id"], e["room"], e["message_id"]) for e in moves] == [
        (bob["id"], group, same_ms[1]),
        (bob["id"], group, late[0]),
    ]
    keys = {k for _, k, body in relay.bus.published if body.get("type") == "read"}
    assert keys == {f"user.{bob['id']}"}


def test_read_refusals(
    api: Api, database: Database, people: dict[str, dict[str, Any]], group: str
) -> None:
    alice, carol = people["alice"], people["carol"]
    t0 = joined_ms(database.engine, group, alice)
    [mid] = post(database.engine, group, alice, t0 + 1)
    # a non-member: the same answer as for a room that does not exist
    r = read(api, carol, group, mid)
    assert r.status_code == 404 and error_code(r) == "room_not_found"
    r = read(api, alice, "0" * 26, mid)
    assert r.status_code == 404 and error_code(r) == "room_not_found"
    # a message of another room
    other = api.post("/api/rooms/direct", {"username": "carol"}, alice["access_token"])
    r = read(api, alice, other.get_json()["id"], mid)
    assert r.status_code == 404 and error_code(r) == "message_not_found"
    for body in ({}, {"message_id": 5}, {"message_id": "not an id"}, {"message_id": None}):
        r = api.post(f"/api/rooms/{group}/read", body, alice["access_token"])
        assert r.status_code == 422 and error_code(r) == "invalid_request", body
    assert api.post(f"/api/rooms/{group}/read", {"message_id": mid}).status_code == 401


def test_unread_is_capped_at_1000(
    api: Api, database: Database, people: dict[str, dict[str, Any]], group: str
) -> None:
    alice, bob = people["alice"], people["bob"]
    t0 = joined_ms(database.engine, group, bob)
    ids = post(database.engine, group, alice, t0 + 1, 1004)
    assert room_of(api, bob, group)["unread"] == 1000
    assert read(api, bob, group, ids[10]).status_code == 204
    assert room_of(api, bob, group)["unread"] == 993


def test_mute(api: Api, people: dict[str, dict[str, Any]], group: str, relay: Relay) -> None:
    bob, carol = people["bob"], people["carol"]
    r = api.client.put(
        f"/api/rooms/{group}/mute", json={"muted": True}, headers=_auth(bob["access_token"])
    )
    assert r.status_code == 200 and r.get_json() == {"room": group, "muted": True}
    assert room_of(api, bob, group)["muted"] is True
    assert room_of(api, people["alice"], group)["muted"] is False  # per member
    events = wait_for(lambda: relay.bus.events("muted"))
    assert events[-1] == {"type": "muted", "user_id": bob["id"], "room": group, "muted": True}
    r = api.client.put(
        f"/api/rooms/{group}/mute", json={"muted": False}, headers=_auth(bob["access_token"])
    )
    assert r.get_json() == {"room": group, "muted": False}
    assert room_of(api, bob, group)["muted"] is False
    denied = api.client.put(
        f"/api/rooms/{group}/mute", json={"muted": True}, headers=_auth(carol["access_token"])
    )
    assert denied.status_code == 404 and error_code(denied) == "room_not_found"
    for body in ({}, {"muted": "yes"}, {"muted": 1}):
        bad = api.client.put(
            f"/api/rooms/{group}/mute", json=body, headers=_auth(bob["access_token"])
        )
        assert bad.status_code == 422, body


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_a_quiet_room_costs_no_count(
    api: Api,
    database: Database,
    people: dict[str, dict[str, Any]],
    group: str,
    clock: FakeClock,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A room without activity since the member's position is answered without reading
    messages (a member who joined after its last message, here)."""
    alice = people["alice"]
    t0 = joined_ms(database.engine, group, alice)
    post(database.engine, group, alice, t0 + 1)
    clock.advance(1)
    r = api.post(f"/api/rooms/{group}/members", {"username": "carol"}, alice["access_token"])
    assert r.status_code == 200
    carol = people["carol"]
    counted: list[str] = []  # the rooms of every statement that reads messages
    real = readstate._params

    def spy(user_id: str, rooms: Any, cap: int = readstate.UNREAD_CAP) -> Any:
        counted.extend(room_id for room_id, _ in rooms)
        return real(user_id, rooms, cap)

    monkeypatch.setattr(readstate, "_params", spy)
    with Session(database.engine) as session:
        states = readstate.read_states(session, carol["id"])
        assert readstate.unread_counts(session, carol["id"], states.values()) == {group: 0}
        assert counted == []
    post(database.engine, group, alice, t0 + 2000)  # activity since: now it is counted
    with Session(database.engine) as session:
        states = readstate.read_states(session, carol["id"])
        assert readstate.unread_counts(session, carol["id"], states.values()) == {group: 1}
        assert counted == [group, group]  # has it any, then how many


def test_migration_0004_starts_existing_members_read(empty_url: str) -> None:  # noqa: F811
    """An install from before 0004: every member's position becomes the room's newest message
    (unread 0 after the upgrade), a room without messages stays at null."""
    cfg = config(empty_url)
    command.upgrade(cfg, "0003")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            for uid, name in (("u1", "alice"), ("u2", "bob")):
                conn.execute(
                    text(
                        "INSERT INTO users (id, username, password_hash, created_ms) "
                        "VALUES (:i, :n, 'x', 1)"
                    ),
                    {"i": uid, "n": name},
                )
            for rid in ("r1", "r2"):
                conn.execute(
                    text(
                        "INSERT INTO rooms (id, kind, name, created_ms, last_activity_ms, "
                        "version, member_count) VALUES (:r, 'group', 'g', 1, 9, 1, 2)"
                    ),
                    {"r": rid},
                )
                for uid, name in (("u1", "alice"), ("u2", "bob")):
                    conn.execute(
                        text(
                            "INSERT INTO memberships (room_id, user_id, username, joined_ms) "
                            "VALUES (:r, :u, :n, 1)"
                        ),
                        {"r": rid, "u": uid, "n": name},
                    )
            for mid, ms in (("ma", 5), ("mc", 9), ("mb", 9)):
                conn.execute(
                    text(
                        "INSERT INTO messages (id, room_id, sender_id, sender, body, sent_ms, "
                        "client_msg_id, written_ms) VALUES (:m, 'r1', 'u1', 'alice', 'x', :s, "
                        ":m, :s)"
                    ),
                    {"m": mid, "s": ms},
                )
        command.upgrade(cfg, "head")
        assert schema_diff(empty_url) == []
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    Membership.room_id,
                    Membership.user_id,
                    Membership.last_read_id,
                    Membership.last_read_ms,
                    Membership.muted,
                ).order_by(Membership.room_id, Membership.user_id)
            ).all()
            assert [tuple(r) for r in rows] == [
                ("r1", "u1", "mc", 9, False),
                ("r1", "u2", "mc", 9, False),
                ("r2", "u1", None, None, False),
                ("r2", "u2", None, None, False),
            ]
            assert conn.execute(select(func.count()).select_from(Message)).scalar_one() == 3
        command.downgrade(cfg, "0003")
        command.upgrade(cfg, "head")
    finally:
        engine.dispose()


def test_counts_of_many_rooms_in_few_statements_match_each_room_alone(
    api: Api, database: Database, people: dict[str, dict[str, Any]]
) -> None:
    """More rooms than one statement counts (``COUNTS_PER_QUERY``): each room's count equals
    its own query's, quiet rooms, rooms over the cap and the member's own messages included."""
    alice, bob = people["alice"], people["bob"]
    n = readstate.COUNTS_PER_QUERY + 30
    rooms = []
    for i in range(n):
        r = api.post("/api/rooms", {"name": f"r{i}", "members": ["bob"]}, alice["access_token"])
        assert r.status_code == 201
        rooms.append(str(r.json["id"]))
    base = joined_ms(database.engine, rooms[-1], bob) + 10
    for i, room in enumerate(rooms):
        if i % 3 and i % 7:
            post(database.engine, room, alice, base + i, n=i % 7)
        if i % 5 == 0:
            post(database.engine, room, bob, base + i)  # one's own: never unread
    post(database.engine, rooms[1], alice, base + 5000, n=readstate.UNREAD_CAP + 3)
    with Session(database.engine) as session:
        states = readstate.read_states(session, bob["id"])
        together = readstate.unread_counts(session, bob["id"], states.values())
        alone = {
            rid: readstate.unread_count(session, rid, bob["id"], st.position)
            for rid, st in states.items()
        }
    assert together == alone
    assert together[rooms[1]] == readstate.UNREAD_CAP
    assert sorted(set(together.values())) == [0, 1, 2, 3, 4, 5, 6, readstate.UNREAD_CAP]
