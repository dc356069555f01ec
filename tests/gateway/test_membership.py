"""The gateway's membership module alone: a real in-process bus and real bindings, a fake
database whose reads can be held at any point, fake sockets. Deterministic races: an event
before, during and after a connect's read; missed events; a broker reconnect."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
import pytest

from services.common import events, topology
from services.common.bus.memory import MemoryBus
from services.gateway.bindings import Bindings
from services.gateway.connection import Connection
from services.gateway.membership import USER_EVENTS, Membership, UserState, room_key


class FakeWs:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_text(self, text: str) -> None:
        self.sent.append(orjson.loads(text))


class FakeDb:
    """Users, rooms and memberships in dicts; ``gate`` holds the next read until released."""

    def __init__(self) -> None:
        self.seq: dict[str, int] = {}
        self.names: dict[str, str] = {}
        self.rooms: dict[str, dict[str, Any]] = {}
        self.members: dict[str, list[str]] = {}  # room -> user ids, in join order
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()
        self.reads = 0
        self.loop: asyncio.AbstractEventLoop | None = None

    def user(self, uid: str, name: str) -> None:
        self.seq[uid], self.names[uid] = 0, name

    def room_obj(self, rid: str) -> dict[str, Any]:
        r = self.rooms[rid]
        obj = {**r, "member_count": len(self.members[rid])}
        if len(self.members[rid]) <= 100:
            obj["members"] = sorted(self.names[u] for u in self.members[rid])
        else:
            obj.pop("members", None)
        return obj

    # changes, returning the events the outbox would carry
    def create(self, rid: str, uids: list[str]) -> list[dict[str, Any]]:
        self.rooms[rid] = {"id": rid, "kind": "group", "name": "g", "owner": None, "version": 1}
        self.members[rid] = list(uids)
        out = []
        for u in uids:
            self.seq[u] += 1
            out.append(_event(events.room_event("joined", u, self.seq[u], self.room_obj(rid))))
        return out

    def add(self, rid: str, uid: str) -> list[dict[str, Any]]:
        self.members[rid].append(uid)
        self.rooms[rid]["version"] += 1
        self.seq[uid] += 1
        obj = self.room_obj(rid)
        return [
            _event(events.room_event("joined", uid, self.seq[uid], obj)),
            _event(
                events.member_event(
                    "member_joined", rid, obj["version"], obj["member_count"], self.names[uid], uid
                )
            ),
        ]

    def remove(self, rid: str, uid: str) -> list[dict[str, Any]]:
        self.members[rid].remove(uid)
        self.rooms[rid]["version"] += 1
        self.seq[uid] += 1
        obj = self.room_obj(rid)
        return [
            _event(events.room_event("left", uid, self.seq[uid], obj)),
            _event(
                events.member_event(
                    "member_left", rid, obj["version"], obj["member_count"], self.names[uid], uid
                )
            ),
        ]

    # the GatewayStore interface (called in worker threads)
    def _hold(self) -> None:
        self.reads += 1
        gate = self.gate
        if gate is not None and self.loop is not None:
            self.loop.call_soon_threadsafe(self.reading.set)
            asyncio.run_coroutine_threadsafe(gate.wait(), self.loop).result(10)

    def user_snapshot(self, uid: str) -> tuple[int, list[str]] | None:
        snap = (self.seq[uid], [r for r, m in self.members.items() if uid in m])
        self._hold()  # the snapshot is taken; the answer is late
        return snap

    def user_snapshots(self, uids: list[str]) -> dict[str, tuple[int, list[str]]]:
        snap = {u: (self.seq[u], [r for r, m in self.members.items() if u in m]) for u in uids}
        self._hold()
        return snap

    def rooms_(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {r: copy.deepcopy(self.room_obj(r)) for r in ids if r in self.rooms}


def _event(published: tuple[str, str, bytes]) -> dict[str, Any]:
    return dict(orjson.loads(published[2]))


class Store:
    def __init__(self, db: FakeDb) -> None:
        self.user_snapshot = db.user_snapshot
        self.user_snapshots = db.user_snapshots
        self.rooms = db.rooms_


class World:
    def __init__(self, db: FakeDb, bus: MemoryBus, membership: Membership) -> None:
        self.db, self.bus, self.m = db, bus, membership
        self.online: set[str] = set()
        self.resynced: list[str] = []

    def conn(self, uid: str) -> tuple[Connection, FakeWs]:
        ws = FakeWs()
        c = Connection(ws, 1000, 100.0, 100)  # type: ignore[arg-type]
        c.user_id, c.username, c.sid = uid, self.db.names[uid], "s-" + uid
        c.hold()
        return c, ws

    async def connect(self, uid: str) -> tuple[Connection, FakeWs, list[dict[str, Any]]]:
        c, ws = self.conn(uid)
        rooms = await self.m.attach(c)
        c.release_with({"type": "ready", "rooms": rooms})
        await settle()
        return c, ws, rooms

    def deliver(self, evs: list[dict[str, Any]]) -> None:
        """What the gateway's queue would hand over, in order (only what it is bound to)."""
        for ev in evs:
            key = USER_EVENTS if ev["type"] == "room" else room_key(ev["room_id"])
            if key in self.m.bindings.bound:
                (self.m.on_user_event if ev["type"] == "room" else self.m.on_room_event)(ev)


async def settle(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)
    await asyncio.sleep(0.01)


def frames(ws: FakeWs, kind: str, event: str | None = None) -> list[dict[str, Any]]:
    return [f for f in ws.sent if f["type"] == kind and (event is None or f.get("event") == event)]


def run(body: Callable[[World], Awaitable[None]]) -> None:
    async def main() -> None:
        db = FakeDb()
        db.loop = asyncio.get_running_loop()
        bus = MemoryBus()
        await bus.connect()
        await bus.private_queue("gw.test", _ignore)
        bindings = Bindings(bus, "gw.test", linger=0)
        bindings.start()
        fixed = bindings.acquire([USER_EVENTS])  # as the gateway does at start
        assert fixed is not None and await fixed
        world: World | None = None

        async def resync(us: UserState) -> None:
            assert world is not None
            world.resynced.append(us.id)

        m = Membership(
            Store(db),  # type: ignore[arg-type]
            bindings,
            lambda name: world is not None and name in world.online,
            presence_batch=0,
            on_resync=resync,
        )
        world = World(db, bus, m)
        try:
            await body(world)
        finally:
            await bindings.stop()
            await bus.close()

    asyncio.run(main())


async def _ignore(_: object) -> None:
    return None


# --- connect races ---------------------------------------------------------------------------


@pytest.mark.parametrize("when", ["before_read", "during_read", "after_read"])
def test_a_left_racing_a_connect_is_never_lost(when: str) -> None:
    async def body(w: World) -> None:
        for u in ("a", "b"):
            w.db.user(u, u + "name")
        w.db.create("r1", ["a", "b"])
        left: list[dict[str, Any]] = []
        if when == "before_read":
            left = w.db.remove("r1", "a")  # committed before the connect reads
        w.db.gate = asyncio.Event()
        task = asyncio.create_task(w.connect("a"))
        await asyncio.wait_for(w.db.reading.wait(), 5)
        # users' events are bound before any read: whatever is published now reaches us
        assert USER_EVENTS in w.m.bindings.bound
        if when == "during_read":  # the read already saw "a" in the room
            left = w.db.remove("r1", "a")
            w.deliver(left)
        w.db.gate.set()
        _c, ws, rooms = await task
        if when == "after_read":
            left = w.db.remove("r1", "a")
            w.deliver(left)
        else:
            w.deliver(left)  # a late copy of an event the read already covers: dropped
        await settle()
        assert not w.m.is_member("a", "r1")
        assert "r1" not in w.m.rooms  # no local member left: not kept, not bound
        if when == "after_read":  # "ready" had it, then "left" took it away
            assert [r["id"] for r in rooms] == ["r1"]
            assert [f["room"]["id"] for f in frames(ws, "room", "left")] == ["r1"]
        else:  # applied before "ready" was built: the client never holds the room
            assert rooms == []
            assert frames(ws, "room", "joined") == []

    run(body)


def test_a_join_during_a_connect_read_is_applied_after_it() -> None:
    async def body(w: World) -> None:
        for u in ("a", "b"):
            w.db.user(u, u)
        w.db.create("r0", ["a"])
        w.db.create("r1", ["b"])
        w.db.gate = asyncio.Event()
        task = asyncio.create_task(w.connect("a"))
        await asyncio.wait_for(w.db.reading.wait(), 5)
        joined = w.db.add("r1", "a")
        w.deliver(joined)
        assert not w.m.is_member("a", "r1")  # waiting behind the read
        w.db.gate.set()
        _c, ws, rooms = await task
        await settle()
        assert w.m.is_member("a", "r1")
        assert room_key("r1") in w.m.bindings.bound
        # applied before "ready" was built, so "ready" has it (a "joined" after it is harmless)
        assert [r["id"] for r in rooms] == ["r0", "r1"]
        assert [f["room"]["id"] for f in frames(ws, "room", "joined")] in ([], ["r1"])

    run(body)


# --- missed and stale events -----------------------------------------------------------------


def test_a_missed_event_rereads_the_user_and_resyncs_them() -> None:
    async def body(w: World) -> None:
        for u in ("a", "b"):
            w.db.user(u, u)
        w.db.create("r1", ["a", "b"])
        w.db.create("r2", ["b"])
        _c, ws, _ = await w.connect("a")
        w.db.remove("r1", "a")  # lost (not delivered)
        w.deliver(w.db.add("r2", "a")[:1])  # seq 3 after 1: a gap
        await settle()
        assert w.resynced == ["a"]
        assert not w.m.is_member("a", "r1") and w.m.is_member("a", "r2")
        assert w.m.may_act("a")
        # a stale duplicate changes nothing
        w.deliver(w.db.create("r3", ["b"])[:0])
        before = list(ws.sent)
        w.m.on_user_event(
            {"type": "room", "event": "left", "user_id": "a", "seq": 1, "room": {"id": "r2"}}
        )
        await settle()
        assert ws.sent == before and w.m.is_member("a", "r2")

    run(body)


def test_a_stale_user_gets_no_message_until_reread() -> None:
    async def body(w: World) -> None:
        for u in ("a", "b"):
            w.db.user(u, u)
        w.db.create("r1", ["a", "b"])
        c, _ws, _ = await w.connect("a")
        w.db.gate = asyncio.Event()
        w.db.reading.clear()
        w.db.remove("r1", "a")
        w.deliver(w.db.add("r1", "a")[:1])  # a gap: "a" is re-read (held)
        await asyncio.wait_for(w.db.reading.wait(), 5)
        assert not w.m.may_act("a")
        assert list(w.m.recipients("r1")) == []
        w.db.gate.set()
        await settle()
        assert w.m.may_act("a") and list(w.m.recipients("r1")) == [c]

    run(body)


# --- room events ------------------------------------------------------------------------------


def test_member_events_are_small_frames_and_a_gap_rereads_the_room() -> None:
    async def body(w: World) -> None:
        for u in ("a", "b", "c", "d"):
            w.db.user(u, u)
        w.db.create("r1", ["a", "b"])
        _ca, wa, _ = await w.connect("a")
        w.online.add("c")
        w.deliver(w.db.add("r1", "c"))
        await settle()
        assert frames(wa, "room", "member_joined") == [
            {
                "type": "room",
                "event": "member_joined",
                "room": "r1",
                "username": "c",
                "member_count": 3,
            }
        ]
        assert {"type": "presence", "username": "c", "online": True} in wa.sent
        assert w.m.rooms["r1"].members == ["a", "b", "c"]
        assert w.m.watchers("c") == {"a"}
        w.db.add("r1", "d")  # missed
        w.deliver(w.db.remove("r1", "b"))  # version 4 after 2: apply, and re-read the room
        await settle()
        assert w.m.rooms["r1"].version == 4
        assert w.m.rooms["r1"].members == ["a", "c", "d"]
        assert [f["username"] for f in frames(wa, "room", "member_joined")] == ["c", "d"]
        assert [f["username"] for f in frames(wa, "room", "member_left")] == ["b"]

    run(body)


def test_a_room_growing_past_100_stops_listing_and_shrinking_reads_the_list() -> None:
    async def body(w: World) -> None:
        uids = [f"u{i:03d}" for i in range(102)]
        for u in uids:
            w.db.user(u, u)
        w.db.create("big", uids[:100])
        _c, ws, rooms = await w.connect(uids[0])
        assert len(rooms[0]["members"]) == 100 and w.m.watchers(uids[50]) == {uids[0]}
        w.deliver(w.db.add("big", uids[100]))
        await settle()
        assert "members" not in w.m.rooms["big"].obj and w.m.watchers(uids[50]) == set()
        w.deliver(w.db.remove("big", uids[100]))  # back to 100: its list is read again
        await settle()
        assert w.m.rooms["big"].members == sorted(uids[:100])
        assert w.m.watchers(uids[50]) == {uids[0]}
        sizes = [len(orjson.dumps(f)) for f in frames(ws, "room")]
        assert sizes and max(sizes) < 300

    run(body)


# --- broker reconnect -------------------------------------------------------------------------


def test_recovery_rebinds_then_rereads_then_resyncs() -> None:
    async def body(w: World) -> None:
        for u in ("a", "b", "c"):
            w.db.user(u, u)
        w.db.create("r1", ["a", "b"])
        w.db.create("r2", ["c"])
        _ca, wa, _ = await w.connect("a")
        # the broker goes away: the queue and its bindings with it; events meanwhile are lost
        held = w.m.begin_recovery()
        assert list(w.m.recipients("r1")) == [] and not w.m.may_act("a")
        w.m.bindings.bound.clear()
        w.db.remove("r1", "a")
        w.db.add("r2", "a")
        w.m.bindings.restore()
        fixed = w.m.bindings.wait([USER_EVENTS])
        assert fixed is not None and await fixed  # the gateway's own keys first
        await w.m.recover()
        w.m.end_recovery(held)
        await settle()
        assert room_key("r2") in w.m.bindings.bound and room_key("r1") not in w.m.bindings.refs
        assert not w.m.is_member("a", "r1") and w.m.is_member("a", "r2")
        assert [f["room"]["id"] for f in frames(wa, "room", "left")] == ["r1"]
        assert [f["room"]["id"] for f in frames(wa, "room", "joined")] == ["r2"]
        assert w.m.may_act("a")

    run(body)


def test_bindings_are_pipelined_and_shared() -> None:
    async def body(w: World) -> None:
        w.db.user("a", "a")
        w.db.user("b", "b")
        for i in range(300):
            w.db.create(f"r{i}", ["a", "b"])
        before = w.m.bindings.batches
        _c, _ws, rooms = await w.connect("a")
        assert len(rooms) == 300
        await asyncio.wait_for(w.m.wait_bound(w.m.users["a"]), 5)
        used = w.m.bindings.batches - before
        assert used == 1, used  # all 300 rooms in one batch
        await w.connect("b")
        assert w.m.bindings.batches - before == used  # already bound: nothing more
        assert len(w.m.bindings.bound) == 301  # 300 rooms and every user's events
        assert w.bus.binding_count() == 301 + 1  # and the dead-letter queue of the topology

    run(body)


def test_topology_keys() -> None:
    assert room_key("r") == (topology.MESSAGES, "room.r.#")
    assert USER_EVENTS == (topology.EVENTS, "user.*")
