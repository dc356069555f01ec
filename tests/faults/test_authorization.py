"""Scenario 12: nobody reads or writes a room they are not in, by any endpoint or frame, with real
ids of other people's rooms and with guessed ones, on the running scaled cluster.

REST: GET /api/rooms/{id}, POST/DELETE members, GET /api/history/{id} (with and without
cursors, cursors taken from other rooms too), the room list. WebSocket: send and typing (and
nothing of it reaches the members). A member removed from a group loses all of it at once.
A refusal never says whether the room exists: the answer for a real room is the same as for a
made-up id (no existence oracle).
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from typing import Any

import httpx
import pytest

from services.common.ids import new_id
from tests.support.client import (
    Stack,
    User,
    WsClient,
    direct_room,
    is_text,
    register_and_login,
    wait_for,
)

ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def guessed_ids(real: str) -> list[str]:
    return [
        new_id(),  # a fresh, well-formed id
        real[:-1] + ("0" if real[-1] != "0" else "1"),  # the neighbour of a real id
        real.upper(),  # case confusion
        real + "x",  # too long
        real[:25],  # too short
        "0" * 26,
        "".join(secrets.choice(ALPHABET) for _ in range(26)),
        "..%2F..%2Fetc",
        "%00",
    ]


@pytest.fixture(scope="module")
def world(scaled: Stack) -> dict[str, Any]:
    alice, bob, carol, mallory = (register_and_login(scaled) for _ in range(4))
    with scaled.http() as http:
        r = http.post(
            scaled.url("/api/rooms"),
            json={"name": "secret plans", "members": [bob.username, carol.username]},
            headers=alice.headers,
        )
        assert r.status_code == 201, r.text
        group = r.json()
    dm = direct_room(scaled, alice, bob.username)
    mallorys = direct_room(scaled, mallory, carol.username)

    async def seed() -> dict[str, str]:
        a = await WsClient.connect(scaled, alice)
        g = await a.send_message("the plan", room=group["id"])
        d = await a.send_message("between us", room=dm["id"])
        m = await WsClient.connect(scaled, mallory)
        own = await m.send_message("mallory's own", room=mallorys["id"])
        await a.close()
        await m.close()
        return {"group": g["message"]["id"], "dm": d["message"]["id"], "own": own["message"]["id"]}

    msgs = asyncio.run(seed())
    for room, who in ((group["id"], alice), (dm["id"], alice), (mallorys["id"], mallory)):
        wait_for(lambda room=room, who=who: history_of(scaled, who, room).json()["messages"], 10)
    return {
        "alice": alice,
        "bob": bob,
        "carol": carol,
        "mallory": mallory,
        "group": group,
        "dm": dm,
        "mallorys": mallorys,
        "msgs": msgs,
    }


def history_of(stack: Stack, user: User, room: str, **params: str) -> httpx.Response:
    with stack.http() as http:
        return http.get(
            f"{stack.history_url}/api/history/{room}", params=params, headers=user.headers
        )


def answer(r: httpx.Response) -> tuple[int, str | None]:
    try:
        return r.status_code, r.json().get("error", {}).get("code")
    except ValueError:
        return r.status_code, "not json"


def rest_probes(
    stack: Stack, who: User, room: str, member: str, cursor: str
) -> dict[str, tuple[int, str | None]]:
    out = {}
    with stack.http() as http:
        a = stack.auth_url
        out["get room"] = answer(http.get(f"{a}/api/rooms/{room}", headers=who.headers))
        out["add self"] = answer(
            http.post(
                f"{a}/api/rooms/{room}/members",
                json={"username": who.username},
                headers=who.headers,
            )
        )
        out["remove member"] = answer(
            http.delete(f"{a}/api/rooms/{room}/members/{member}", headers=who.headers)
        )
        out["remove self"] = answer(
            http.delete(f"{a}/api/rooms/{room}/members/{who.username}", headers=who.headers)
        )
        out["history"] = answer(history_of(stack, who, room))
        out["history after"] = answer(history_of(stack, who, room, after=cursor))
        out["history before"] = answer(history_of(stack, who, room, before=cursor))
    return out


def test_outsider_gets_404_everywhere_like_for_a_made_up_room(
    scaled: Stack, world: dict[str, Any]
) -> None:
    mallory, alice = world["mallory"], world["alice"]
    problems = []
    made_up = rest_probes(scaled, mallory, new_id(), alice.username, new_id())
    for name in ("group", "dm"):
        room = world[name]["id"]
        got = rest_probes(scaled, mallory, room, alice.username, world["msgs"][name])
        for probe, (status, code) in got.items():
            if status != 404:
                problems.append(f"{name} {probe}: {status} {code}")
            if (status, code) != made_up[probe]:
                problems.append(
                    f"{name} {probe}: {status} {code} differs from a made-up room's "
                    f"{made_up[probe]} (an existence oracle)"
                )
    for room in guessed_ids(world["group"]["id"]):
        for probe, (status, code) in rest_probes(
            scaled, mallory, room, alice.username, new_id()
        ).items():
            if status not in (404, 422):  # (JSON-ness of routing-level 404s: test_fuzz.py)
                problems.append(f"guessed {room!r} {probe}: {status} {code}")
    with scaled.http() as http:
        mine = http.get(f"{scaled.auth_url}/api/rooms", headers=mallory.headers).json()["rooms"]
    if {r["id"] for r in mine} != {world["mallorys"]["id"]}:
        problems.append(f"mallory's room list: {[r['id'] for r in mine]}")
    # the group and the dm are unchanged
    with scaled.http() as http:
        group = http.get(
            f"{scaled.auth_url}/api/rooms/{world['group']['id']}", headers=alice.headers
        ).json()
    if mallory.username in group["members"] or alice.username not in group["members"]:
        problems.append(f"membership changed: {group['members']}")
    assert not problems, problems


def test_cursor_from_another_room_reads_nothing_of_it(scaled: Stack, world: dict[str, Any]) -> None:
    """Mallory pages her own room with the id of a message of the group as the cursor."""
    mallory = world["mallory"]
    own = world["mallorys"]["id"]
    for params in ({"after": world["msgs"]["group"]}, {"before": world["msgs"]["group"]}):
        r = history_of(scaled, mallory, own, **params)
        assert r.status_code in (404, 422), (params, r.status_code, r.text)
        assert "the plan" not in r.text
    r = history_of(scaled, mallory, own)
    assert [m["body"] for m in r.json()["messages"]] == ["mallory's own"]


def test_outsider_frames_are_refused_and_reach_nobody(scaled: Stack, world: dict[str, Any]) -> None:
    mallory, bob, carol = world["mallory"], world["bob"], world["carol"]
    targets = [world["group"]["id"], world["dm"]["id"], *guessed_ids(world["group"]["id"])]

    async def scenario() -> list[str]:
        problems = []
        members = [
            await WsClient.connect(scaled, bob, gateway=1),
            await WsClient.connect(scaled, carol, gateway=2),
        ]
        m = await WsClient.connect(scaled, mallory, gateway=0)
        for room in targets:
            cmid = str(uuid.uuid4())
            got = await m.send_message("let me in", room=room, cmid=cmid)
            if got["type"] != "error" or got["code"] not in ("not_a_member", "room_not_found"):
                problems.append(f"send to {room!r}: {got}")
            got = await m.send_message("let me in", room=room, cmid=cmid, retry=True)
            if got["type"] != "error":
                problems.append(f"retried send to {room!r}: {got}")
            await m.send({"type": "typing", "room": room})
            err = await m.expect(lambda f: f["type"] == "error", timeout=5)
            if err.get("code") not in ("not_a_member", "room_not_found"):
                problems.append(f"typing in {room!r}: {err}")
            for kind, mid in (("edit", world["msgs"]["group"]), ("delete", world["msgs"]["dm"])):
                cmid = str(uuid.uuid4())
                frame = {"type": kind, "room": room, "message_id": mid, "client_msg_id": cmid}
                await m.send({**frame, "body": "defaced"} if kind == "edit" else frame)
                err = await m.expect(lambda f, cmid=cmid: f.get("client_msg_id") == cmid, 10)
                if err["type"] != "error" or err["code"] not in ("not_a_member", "room_not_found"):
                    problems.append(f"{kind} in {room!r}: {err}")
        # nor through a room of her own: another room's message is not found
        for kind, mid in (("edit", world["msgs"]["group"]), ("delete", world["msgs"]["dm"])):
            cmid = str(uuid.uuid4())
            frame = {
                "type": kind,
                "room": world["mallorys"]["id"],
                "message_id": mid,
                "client_msg_id": cmid,
            }
            await m.send({**frame, "body": "defaced"} if kind == "edit" else frame)
            err = await m.expect(lambda f, cmid=cmid: f.get("client_msg_id") == cmid, 10)
            if err["type"] != "error" or err["code"] != "message_not_found":
                problems.append(f"{kind} through her own room: {err}")
        # a DM to a member is allowed, but it is a new direct room, not the group
        dm = await m.send_message("hi carol", to=carol.username)
        if dm["type"] != "ack" or dm["message"]["room"] == world["group"]["id"]:
            problems.append(f"direct message: {dm}")
        for c in members:
            try:
                leaked = await c.expect(
                    lambda f: (
                        f["type"] in ("message", "typing", "message_changed")
                        and f.get("message", f).get("room")
                        in (world["group"]["id"], world["dm"]["id"])
                    ),
                    timeout=1.5,
                )
                problems.append(f"leaked to a member: {leaked}")
            except AssertionError:
                pass
            await c.close()
        await m.close()
        return problems

    problems = asyncio.run(scenario())
    assert not problems, problems
    msgs = history_of(scaled, world["alice"], world["group"]["id"]).json()["messages"]
    texts = [m for m in msgs if m["kind"] == "text"]
    assert [(m["body"], m["edited_at"], m["deleted"]) for m in texts] == [("the plan", None, False)]
    dm = history_of(scaled, world["alice"], world["dm"]["id"]).json()["messages"]
    assert [(m["body"], m["deleted"]) for m in dm] == [("between us", False)]


def test_removed_member_loses_read_and_write_at_once(scaled: Stack) -> None:
    owner, member, other = (register_and_login(scaled) for _ in range(3))
    with scaled.http() as http:
        room = http.post(
            f"{scaled.auth_url}/api/rooms",
            json={"name": "club", "members": [member.username, other.username]},
            headers=owner.headers,
        ).json()["id"]

    async def scenario() -> list[str]:
        problems = []
        o = await WsClient.connect(scaled, owner, gateway=0)
        mc = await WsClient.connect(scaled, member, gateway=1)
        first = await mc.send_message("before removal", room=room)
        assert first["type"] == "ack", first
        with scaled.http() as http:
            r = http.delete(
                f"{scaled.auth_url}/api/rooms/{room}/members/{member.username}",
                headers=owner.headers,
            )
            assert r.status_code == 204, r.text
        await mc.expect(lambda f: f["type"] == "room" and f["event"] == "left", timeout=3)
        after = await mc.send_message("after removal", room=room)
        if after["type"] != "error" or after["code"] != "not_a_member":
            problems.append(f"send after removal: {after}")
        await o.send_message("members only", room=room)
        try:
            leaked = await mc.expect(is_text, timeout=1.5)
            problems.append(f"live message after removal: {leaked}")
        except AssertionError:
            pass
        with scaled.http() as http:
            for path in (f"/api/rooms/{room}",):
                if http.get(scaled.auth_url + path, headers=member.headers).status_code != 404:
                    problems.append(f"{path} after removal")
        h = history_of(scaled, member, room)
        if h.status_code != 404:
            problems.append(f"history after removal: {h.status_code}")
        await o.close()
        await mc.close()
        return problems

    problems = asyncio.run(scenario())
    assert not problems, problems
