"""Group settings (issue 17): ``PATCH /api/rooms/{id}`` (rename, ``who_can_add``), who may add
members, and the notices each change of a group leaves in its history (on SQLite and MariaDB,
through the real outbox relay onto an in-process bus with one history shard)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.auth.conftest import Api, Relay, error_code, wait_for


@pytest.fixture
def people(api: Api) -> dict[str, dict[str, Any]]:
    return {name: api.user(name) for name in ("olga", "bob", "carol", "dave")}


def tok(people: dict[str, dict[str, Any]], name: str) -> str:
    return str(people[name]["access_token"])


def make_group(api: Api, people: dict[str, Any], members: list[str]) -> dict[str, Any]:
    r = api.post("/api/rooms", {"name": "team", "members": members}, tok(people, "olga"))
    assert r.status_code == 201, r.get_json()
    return dict(r.get_json())


def updates(relay: Relay, room_id: str) -> list[dict[str, Any]]:
    return [
        e for e in relay.bus.events("member") if e["event"] == "updated" and e["room_id"] == room_id
    ]


def notices(relay: Relay, room_id: str) -> list[tuple[Any, ...]]:
    return [
        (m["notice"]["event"], m["notice"]["username"], m["notice"]["by"], m["notice"]["name"])
        for m in relay.bus.notices()
        if m["room"] == room_id
    ]


def test_the_owner_renames_and_sets_who_can_add(
    api: Api, people: dict[str, Any], relay: Relay
) -> None:
    room = make_group(api, people, ["bob"])
    assert room["who_can_add"] == "members"  # the default
    r = api.patch(f"/api/rooms/{room['id']}", {"name": "  Launch  "}, tok(people, "olga"))
    assert r.status_code == 200, r.get_json()
    renamed = r.get_json()
    assert renamed["name"] == "Launch" and renamed["version"] == room["version"] + 1
    assert renamed["unread"] == 0 and "muted" in renamed  # the caller's copy
    wait_for(lambda: updates(relay, room["id"]))
    ev = updates(relay, room["id"])[-1]
    assert ev["room"]["name"] == "Launch" and ev["version"] == renamed["version"]
    r = api.patch(f"/api/rooms/{room['id']}", {"who_can_add": "owner"}, tok(people, "olga"))
    assert r.status_code == 200 and r.get_json()["who_can_add"] == "owner"
    both = api.patch(
        f"/api/rooms/{room['id']}",
        {"name": "Launch v2", "who_can_add": "members"},
        tok(people, "olga"),
    ).get_json()
    assert (both["name"], both["who_can_add"]) == ("Launch v2", "members")
    assert both["version"] == renamed["version"] + 2  # one step per change
    # the same values again: nothing changes, no event
    wait_for(lambda: len(updates(relay, room["id"])) == 3)
    same = api.patch(f"/api/rooms/{room['id']}", {"name": "Launch v2"}, tok(people, "olga"))
    assert same.status_code == 200 and same.get_json()["version"] == both["version"]
    got = api.get(f"/api/rooms/{room['id']}", tok(people, "bob")).get_json()
    assert (got["name"], got["who_can_add"]) == ("Launch v2", "members")
    listed = api.get("/api/rooms", tok(people, "bob")).get_json()["rooms"]
    assert [r["who_can_add"] for r in listed if r["id"] == room["id"]] == ["members"]
    # renames leave notices (a setting alone does not)
    wait_for(lambda: len(notices(relay, room["id"])) == 3)
    assert notices(relay, room["id"]) == [
        ("created", None, "olga", None),
        ("renamed", None, "olga", "Launch"),
        ("renamed", None, "olga", "Launch v2"),
    ]
    assert len(updates(relay, room["id"])) == 3


def test_only_the_owner_patches_a_group(api: Api, people: dict[str, Any], relay: Relay) -> None:
    room = make_group(api, people, ["bob"])
    path = f"/api/rooms/{room['id']}"
    r = api.patch(path, {"name": "mine now"}, tok(people, "bob"))
    assert r.status_code == 403 and error_code(r) == "forbidden"
    r = api.patch(path, {"who_can_add": "members"}, tok(people, "bob"))
    assert r.status_code == 403 and error_code(r) == "forbidden"
    # not a member, or no such room: the same 404 (no existence leak)
    for who, where in (("carol", path), ("olga", "/api/rooms/" + "0" * 26)):
        r = api.patch(where, {"name": "x"}, tok(people, who))
        assert r.status_code == 404 and error_code(r) == "room_not_found"
    direct = api.post("/api/rooms/direct", {"username": "bob"}, tok(people, "olga")).get_json()
    assert direct["who_can_add"] is None
    r = api.patch(f"/api/rooms/{direct['id']}", {"name": "us"}, tok(people, "olga"))
    assert r.status_code == 404 and error_code(r) == "room_not_found"
    r = api.patch(path, {"name": "x"})
    assert r.status_code == 401
    after = api.get(path, tok(people, "olga")).get_json()
    assert (after["name"], after["version"]) == ("team", room["version"])
    assert notices(relay, room["id"]) in ([], [("created", None, "olga", None)])


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"nmae": "typo"},
        {"name": ""},
        {"name": "   "},
        {"name": None},
        {"name": 7},
        {"name": ["x"]},
        {"name": "x" * 101},
        {"name": "tab\there"},
        {"who_can_add": "everyone"},
        {"who_can_add": None},
        {"who_can_add": True},
        {"who_can_add": ["owner"]},
        {"name": "ok", "who_can_add": "OWNER"},
        [],
        "owner",
        None,
    ],
)
def test_bad_patches_are_422(api: Api, people: dict[str, Any], body: Any) -> None:
    room = make_group(api, people, ["bob"])
    r = api.patch(f"/api/rooms/{room['id']}", body, tok(people, "olga"))
    assert r.status_code == 422 and error_code(r) == "invalid_request", (body, r.get_json())
    after = api.get(f"/api/rooms/{room['id']}", tok(people, "olga")).get_json()
    assert (after["name"], after["who_can_add"]) == ("team", "members")


def test_malformed_patch_bodies_are_4xx(api: Api, people: dict[str, Any]) -> None:
    room = make_group(api, people, ["bob"])
    path = f"/api/rooms/{room['id']}"
    headers = {"Authorization": f"Bearer {tok(people, 'olga')}"}
    for data, ctype, status in (
        (b"{nope", "application/json", 400),
        (b'{"name": "x"}', "text/plain", 415),
        (b"\xff\xfe", "application/json", 400),
    ):
        r = api.client.patch(path, data=data, headers={**headers, "Content-Type": ctype})
        assert r.status_code == status, (data, r.get_json())
        assert set(r.get_json()) == {"error"}
    long = api.patch("/api/rooms/" + "r" * 300, {"name": "x"}, tok(people, "olga"))
    assert long.status_code == 404


def test_who_can_add_owner_stops_a_member_re_adding_a_removed_one(
    api: Api, people: dict[str, Any], relay: Relay
) -> None:
    """The reported bug: the owner removes carol, and bob (any member) adds her back at once.
    With who_can_add "owner", only the owner adds."""
    room = make_group(api, people, ["bob", "carol"])
    path = f"/api/rooms/{room['id']}"
    r = api.patch(path, {"who_can_add": "owner"}, tok(people, "olga"))
    assert r.status_code == 200
    r = api.delete(f"{path}/members/carol", tok(people, "olga"))
    assert r.status_code == 204
    r = api.post(f"{path}/members", {"username": "carol"}, tok(people, "bob"))
    assert r.status_code == 403 and error_code(r) == "forbidden"
    r = api.post(f"{path}/members", {"username": "dave"}, tok(people, "bob"))
    assert r.status_code == 403  # nobody new either
    r = api.get(path, tok(people, "carol"))
    assert r.status_code == 404  # still out
    members = api.get(path, tok(people, "olga")).get_json()["members"]
    assert members == ["bob", "olga"]
    # the owner may; and with "members" again, any member may
    r = api.post(f"{path}/members", {"username": "dave"}, tok(people, "olga"))
    assert r.status_code == 200 and "dave" in r.get_json()["members"]
    api.patch(path, {"who_can_add": "members"}, tok(people, "olga"))
    r = api.post(f"{path}/members", {"username": "carol"}, tok(people, "bob"))
    assert r.status_code == 200 and "carol" in r.get_json()["members"]


def test_each_membership_change_leaves_one_notice_in_order(
    api: Api, people: dict[str, Any], relay: Relay
) -> None:
    room = make_group(api, people, ["bob", "carol"])
    path = f"/api/rooms/{room['id']}"
    assert api.post(f"{path}/members", {"username": "dave"}, tok(people, "bob")).status_code == 200
    assert api.delete(f"{path}/members/carol", tok(people, "olga")).status_code == 204
    assert api.delete(f"{path}/members/dave", tok(people, "dave")).status_code == 204
    assert api.patch(path, {"name": "renamed"}, tok(people, "olga")).status_code == 200
    # the owner leaves: the longest-standing member takes over (an `updated`, no notice)
    assert api.delete(f"{path}/members/olga", tok(people, "olga")).status_code == 204
    expected = [
        ("created", None, "olga", None),
        ("joined", "dave", "bob", None),
        ("removed", "carol", "olga", None),
        ("left", "dave", "dave", None),
        ("renamed", None, "olga", "renamed"),
        ("left", "olga", "olga", None),
    ]
    wait_for(lambda: len(notices(relay, room["id"])) == len(expected))
    assert notices(relay, room["id"]) == expected
    relayed = [m for m in relay.bus.notices() if m["room"] == room["id"]]
    ids = [m["id"] for m in relayed]
    assert len(set(ids)) == len(ids)
    assert [m["sent_at"] for m in relayed] == sorted(m["sent_at"] for m in relayed)
    assert all(m["kind"] == "notice" and m["body"] is None for m in relayed)
    # no change, no notice: adding a member twice
    assert api.post(f"{path}/members", {"username": "bob"}, tok(people, "bob")).status_code == 200
    assert len(notices(relay, room["id"])) == len(expected)


def test_a_big_group_costs_one_notice(api: Api, people: dict[str, Any], relay: Relay) -> None:
    names = [f"member{i:03d}" for i in range(150)]
    for name in names:
        api.register(name)
    r = api.post("/api/rooms", {"name": "all hands", "members": names}, tok(people, "olga"))
    assert r.status_code == 201
    room = r.get_json()
    wait_for(lambda: notices(relay, room["id"]))
    assert notices(relay, room["id"]) == [("created", None, "olga", None)]
