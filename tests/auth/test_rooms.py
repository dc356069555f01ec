"""Rooms: direct rooms, groups, members, ordering, no existence leak, and the events."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select, update

from services.common.models import Room
from tests.auth.conftest import Api, Database, Relay, error_code, wait_for

ROOM_KEYS = {
    "id",
    "kind",
    "name",
    "owner",
    "member_count",
    "members",
    "created_at",
    "version",
    "who_can_add",
}
CALLER_KEYS = {"last_read", "unread", "muted"}  # the caller's own state, in answers to them
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


@pytest.fixture
def people(api: Api) -> dict[str, dict[str, Any]]:
    return {name: api.user(name) for name in ("alice", "bob", "carol", "dave")}


def tok(people: dict[str, dict[str, Any]], name: str) -> str:
    return str(people[name]["access_token"])


def check_room(room: dict[str, Any]) -> None:
    small = room["member_count"] <= 100
    keys = set(room)
    assert keys & CALLER_KEYS in (set(), CALLER_KEYS)  # all three or none (events)
    assert keys - CALLER_KEYS == (ROOM_KEYS if small else ROOM_KEYS - {"members"})
    assert room["kind"] in ("direct", "group")
    assert TIMESTAMP.match(room["created_at"])
    if small:
        assert room["members"] == sorted(room["members"])
        assert len(room["members"]) == room["member_count"]


def room_events(relay: Relay, room_id: str) -> list[tuple[str, str]]:
    """(event, user id) of the users' own events and of the room's member events."""
    mine = [
        (e["event"], e["user_id"]) for e in relay.bus.events("room") if e["room"]["id"] == room_id
    ]
    return mine + [
        (e["event"], e.get("user_id", ""))
        for e in relay.bus.events("member")
        if e["room_id"] == room_id
    ]


# --- direct rooms ---------------------------------------------------------------------------


def test_direct_room_is_the_same_from_both_sides(
    api: Api, people: dict[str, Any], relay: Relay
) -> None:
    r1 = api.post("/api/rooms/direct", {"username": "BOB"}, tok(people, "alice"))
    assert r1.status_code == 200
    room = r1.get_json()
    check_room(room)
    assert room["kind"] == "direct"
    assert room["name"] is None and room["owner"] is None
    assert room["members"] == ["alice", "bob"]
    r2 = api.post("/api/rooms/direct", {"username": "alice"}, tok(people, "bob"))
    assert r2.get_json() == room
    r3 = api.post("/api/rooms/direct", {"username": "bob"}, tok(people, "alice"))
    assert r3.get_json() == room
    # both users were told once
    ids = {people["alice"]["id"], people["bob"]["id"]}
    wait_for(lambda: len(room_events(relay, room["id"])) == 2)
    assert sorted(room_events(relay, room["id"])) == sorted(("joined", uid) for uid in ids)


def test_direct_room_errors(api: Api, people: dict[str, Any]) -> None:
    t = tok(people, "alice")
    r = api.post("/api/rooms/direct", {"username": "nobody"}, t)
    assert (r.status_code, error_code(r)) == (404, "user_not_found")
    r = api.post("/api/rooms/direct", {"username": "ALICE"}, t)
    assert (r.status_code, error_code(r)) == (422, "invalid_request")
    r = api.post("/api/rooms/direct", {"username": 7}, t)
    assert (r.status_code, error_code(r)) == (422, "invalid_request")
    r = api.post("/api/rooms/direct", {"username": "bob"})
    assert r.status_code == 401


def test_direct_rooms_cannot_change(api: Api, people: dict[str, Any]) -> None:
    room = api.post("/api/rooms/direct", {"username": "bob"}, tok(people, "alice")).get_json()
    r = api.post(f"/api/rooms/{room['id']}/members", {"username": "carol"}, tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (422, "invalid_request")
    r = api.delete(f"/api/rooms/{room['id']}/members/bob", tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (422, "invalid_request")
    r = api.delete(f"/api/rooms/{room['id']}/members/alice", tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (422, "invalid_request")


# --- groups ---------------------------------------------------------------------------------


def test_create_group(api: Api, people: dict[str, Any], relay: Relay) -> None:
    r = api.post(
        "/api/rooms", {"name": " Team ", "members": ["Bob", "carol", "bob"]}, tok(people, "alice")
    )
    assert r.status_code == 201
    room = r.get_json()
    check_room(room)
    assert room["kind"] == "group"
    assert room["name"] == "Team"
    assert room["owner"] == "alice"
    assert room["members"] == ["alice", "bob", "carol"]
    wait_for(lambda: len(room_events(relay, room["id"])) == 3)
    assert sorted(room_events(relay, room["id"])) == sorted(
        ("joined", people[n]["id"]) for n in ("alice", "bob", "carol")
    )


def test_create_group_of_one(api: Api, people: dict[str, Any]) -> None:
    r = api.post("/api/rooms", {"name": "notes"}, tok(people, "alice"))
    assert r.status_code == 201
    assert r.get_json()["members"] == ["alice"]


def test_create_group_names_unknown_users(api: Api, people: dict[str, Any]) -> None:
    r = api.post(
        "/api/rooms",
        {"name": "x", "members": ["bob", "zed", "Yan", "not valid!"]},
        tok(people, "alice"),
    )
    assert r.status_code == 404
    assert error_code(r) == "user_not_found"
    err = r.get_json()["error"]
    for name in ("zed", "yan", "not valid!"):
        assert name in err["message"]
    assert err["usernames"] == sorted(["zed", "yan", "not valid!"])
    assert "bob" not in err["usernames"]
    assert api.get("/api/rooms", tok(people, "alice")).get_json() == {"rooms": []}


@pytest.mark.parametrize(
    "body",
    [
        {"members": ["bob"]},
        {"name": "", "members": []},
        {"name": "   "},
        {"name": 5},
        {"name": "x" * 101},
        {"name": "bad\x00name"},
        {"name": "ok", "members": "bob"},
        {"name": "ok", "members": [1, 2]},
        {"name": "ok", "members": ["bob", None]},
        {"name": "ok", "members": ["u"] * 10_001},
        [],
        "group",
    ],
)
def test_create_group_invalid_request(api: Api, people: dict[str, Any], body: Any) -> None:
    r = api.post("/api/rooms", body, tok(people, "alice"))
    assert r.status_code == 422
    assert error_code(r) == "invalid_request"


def test_add_member(api: Api, people: dict[str, Any], relay: Relay) -> None:
    room = api.post("/api/rooms", {"name": "g", "members": ["bob"]}, tok(people, "alice"))
    rid = room.get_json()["id"]
    # any member may add
    r = api.post(f"/api/rooms/{rid}/members", {"username": "Carol"}, tok(people, "bob"))
    assert r.status_code == 200
    body = r.get_json()
    check_room(body)
    assert body["members"] == ["alice", "bob", "carol"]
    expect = [("joined", people["carol"]["id"]), ("member_joined", people["carol"]["id"])]
    creation = [("joined", people[n]["id"]) for n in ("alice", "bob")]
    wait_for(lambda: sorted(room_events(relay, rid)) == sorted(creation + expect))
    # adding again changes nothing and announces nothing
    n = len(room_events(relay, rid))
    r = api.post(f"/api/rooms/{rid}/members", {"username": "carol"}, tok(people, "alice"))
    assert r.status_code == 200 and r.get_json()["members"] == ["alice", "bob", "carol"]
    assert len(room_events(relay, rid)) == n


def test_add_member_errors(api: Api, people: dict[str, Any]) -> None:
    rid = api.post("/api/rooms", {"name": "g"}, tok(people, "alice")).get_json()["id"]
    r = api.post(f"/api/rooms/{rid}/members", {"username": "nobody"}, tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (404, "user_not_found")
    r = api.post(f"/api/rooms/{rid}/members", {"username": 1}, tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (422, "invalid_request")
    # a non-member cannot add (and cannot learn the room exists)
    r = api.post(f"/api/rooms/{rid}/members", {"username": "carol"}, tok(people, "bob"))
    assert (r.status_code, error_code(r)) == (404, "room_not_found")
    r = api.post("/api/rooms/" + "0" * 26 + "/members", {"username": "bob"}, tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (404, "room_not_found")


def test_remove_members(api: Api, people: dict[str, Any], relay: Relay) -> None:
    rid = api.post(
        "/api/rooms", {"name": "g", "members": ["bob", "carol", "dave"]}, tok(people, "alice")
    ).get_json()["id"]
    # not the owner: cannot remove others
    r = api.delete(f"/api/rooms/{rid}/members/carol", tok(people, "bob"))
    assert (r.status_code, error_code(r)) == (403, "forbidden")
    # the owner removes anyone
    r = api.delete(f"/api/rooms/{rid}/members/CAROL", tok(people, "alice"))
    assert r.status_code == 204 and r.data == b""
    expect = {("left", people["carol"]["id"]), ("member_left", people["carol"]["id"])}
    wait_for(lambda: expect <= set(room_events(relay, rid)))
    assert len(room_events(relay, rid)) == 4 + 2  # the creation's four, and one each
    r = api.get(f"/api/rooms/{rid}", tok(people, "carol"))
    assert (r.status_code, error_code(r)) == (404, "room_not_found")
    # anyone removes themselves
    assert api.delete(f"/api/rooms/{rid}/members/bob", tok(people, "bob")).status_code == 204
    room = api.get(f"/api/rooms/{rid}", tok(people, "alice")).get_json()
    assert room["members"] == ["alice", "dave"]
    # removing a non-member / unknown user
    r = api.delete(f"/api/rooms/{rid}/members/bob", tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (404, "user_not_found")
    r = api.delete(f"/api/rooms/{rid}/members/nobody", tok(people, "alice"))
    assert (r.status_code, error_code(r)) == (404, "user_not_found")
    # a non-member gets 404 for the room itself
    r = api.delete(f"/api/rooms/{rid}/members/alice", tok(people, "carol"))
    assert (r.status_code, error_code(r)) == (404, "room_not_found")


def test_owner_leaving_hands_over(api: Api, people: dict[str, Any]) -> None:
    rid = api.post(
        "/api/rooms", {"name": "g", "members": ["bob", "carol"]}, tok(people, "alice")
    ).get_json()["id"]
    assert api.delete(f"/api/rooms/{rid}/members/alice", tok(people, "alice")).status_code == 204
    room = api.get(f"/api/rooms/{rid}", tok(people, "bob")).get_json()
    assert room["members"] == ["bob", "carol"]
    assert room["owner"] in ("bob", "carol")
    new_owner = room["owner"]
    other = "carol" if new_owner == "bob" else "bob"
    r = api.delete(f"/api/rooms/{rid}/members/{other}", tok(people, new_owner))
    assert r.status_code == 204


# --- reading --------------------------------------------------------------------------------


def test_non_members_get_404(api: Api, people: dict[str, Any]) -> None:
    rid = api.post(
        "/api/rooms", {"name": "g", "members": ["bob"]}, tok(people, "alice")
    ).get_json()["id"]
    assert api.get(f"/api/rooms/{rid}", tok(people, "bob")).status_code == 200
    outsider = api.get(f"/api/rooms/{rid}", tok(people, "carol"))
    missing = api.get("/api/rooms/" + "0" * 26, tok(people, "carol"))
    assert outsider.status_code == missing.status_code == 404
    assert outsider.get_json() == missing.get_json()
    assert error_code(outsider) == "room_not_found"
    direct = api.post("/api/rooms/direct", {"username": "bob"}, tok(people, "alice")).get_json()
    assert api.get(f"/api/rooms/{direct['id']}", tok(people, "carol")).status_code == 404
    assert api.get("/api/rooms/" + "x" * 300, tok(people, "carol")).status_code == 404


def test_list_rooms_most_recently_active_first(
    api: Api, people: dict[str, Any], database: Database
) -> None:
    t = tok(people, "alice")
    first = api.post("/api/rooms", {"name": "first"}, t).get_json()
    second = api.post("/api/rooms/direct", {"username": "bob"}, t).get_json()
    third = api.post("/api/rooms", {"name": "third", "members": ["carol"]}, t).get_json()
    with database.engine.begin() as conn:  # what the history writer does on a message
        for rid, ms in ((first["id"], 3000), (second["id"], 1000), (third["id"], 2000)):
            conn.execute(update(Room).where(Room.id == rid).values(last_activity_ms=ms))
    rooms = api.get("/api/rooms", t).get_json()["rooms"]
    assert [r["id"] for r in rooms] == [first["id"], third["id"], second["id"]]
    for room in rooms:
        check_room(room)
    with database.engine.begin() as conn:
        conn.execute(update(Room).where(Room.id == second["id"]).values(last_activity_ms=9000))
    rooms = api.get("/api/rooms", t).get_json()["rooms"]
    assert rooms[0]["id"] == second["id"]
    # others see only their own rooms
    assert [r["id"] for r in api.get("/api/rooms", tok(people, "carol")).get_json()["rooms"]] == [
        third["id"]
    ]
    assert api.get("/api/rooms", tok(people, "dave")).get_json() == {"rooms": []}
    with database.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Room)).scalar_one() == 3


def test_rooms_need_a_token(api: Api) -> None:
    for r in (
        api.get("/api/rooms"),
        api.post("/api/rooms", {"name": "x"}),
        api.get("/api/rooms/abc"),
        api.post("/api/rooms/abc/members", {"username": "x"}),
        api.delete("/api/rooms/abc/members/x"),
    ):
        assert r.status_code == 401


def test_members_are_paged_by_name(api: Api, people: dict[str, Any]) -> None:
    t = tok(people, "alice")
    rid = api.post("/api/rooms", {"name": "g", "members": ["bob", "carol", "dave"]}, t).get_json()[
        "id"
    ]
    r = api.get(f"/api/rooms/{rid}/members?limit=3", t)
    assert r.status_code == 200, r.get_json()
    page = r.get_json()
    assert page == {
        "members": [{"username": n, "online": False} for n in ("alice", "bob", "carol")],
        "next": "carol",
    }
    page = api.get(f"/api/rooms/{rid}/members?after=carol&limit=3", t).get_json()
    assert page == {"members": [{"username": "dave", "online": False}], "next": None}
    for bad in ("limit=0", "limit=1001", "limit=x", "after=" + "x" * 65):
        r = api.get(f"/api/rooms/{rid}/members?{bad}", t)
        assert (r.status_code, error_code(r)) == (422, "invalid_request"), bad
    r = api.get(f"/api/rooms/{rid}/members", tok(people, "bob") + "x")
    assert r.status_code == 401
    api.delete(f"/api/rooms/{rid}/members/dave", t)
    r = api.get(f"/api/rooms/{rid}/members", tok(people, "dave"))
    assert (r.status_code, error_code(r)) == (404, "room_not_found")
