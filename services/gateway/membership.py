"""Which local users are in which rooms: kept live by events, re-read whenever it may have
missed one (docs/ARCHITECTURE.md, "Membership on a gateway").

State, per gateway process:

- ``users``: each user with a connection here: their connections, their rooms and the last
  ``membership_seq`` applied (``seq``). Their own ``joined``/``left`` events (routing key
  ``user.<id>``; every gateway binds ``user.*``, so they reach it whoever is connected) are
  applied in ``seq`` order: an event at or below ``seq`` is stale and dropped; one past
  ``seq + 1`` means one was missed, and the user is re-read.
- ``rooms``: each room with a local member: its room object (``members`` only for rooms of up
  to ``CONTACT_ROOM_MAX``), its ``version`` and its local members. Its events
  (``room.<id>.member``: ``member_joined``, ``member_left``, ``updated``) are applied in
  ``version`` order the same way; a gap re-reads the room.
- ``contact_rooms``: for presence, the small rooms each username is in.

The rules that keep it true:

1. Bind first, then read. Users' events are bound (``user.*``) before any user is read; a
   room is read again once its key is bound; after a broker reconnect the gateway's own keys
   are bound again before every user is read again. Whatever changes after a read comes as an
   event.
2. While a user's rooms are being read, their events wait in ``pending`` and are applied after
   the read, with the ``seq`` rule (so an event that the read already reflects is dropped).
3. A client hears that it joined a room only once the room is bound here (a message sent right
   after "joined" reaches it) and the room's history shard has committed what was routed
   before (a message sent to the new room before it was bound here is in history when the
   client first reads the room). A connection gets ``ready`` before its rooms are bound (binding
   costs the broker ~1 ms each): the gateway publishes its sync marker only once they are, so
   what it missed meanwhile is in history by ``synced`` (docs/PROTOCOL.md, the resume rule).
4. A user whose state may be stale (a gap) gets no live message and cannot send until re-read;
   then their connections are told to resync. After a broker reconnect the same holds for
   everyone (``trusted``), until the whole state is read again.

Every change costs the room's local members (a small frame each), never the room's size.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

import orjson

from services.common import topology
from services.common.directory import CONTACT_ROOM_MAX
from services.gateway.bindings import Bindings, Key
from services.gateway.connection import Connection
from services.gateway.fanout import PresenceFanout
from services.gateway.store import GatewayStore, Snapshot

log = logging.getLogger("chat.gateway.membership")

PENDING_MAX = 1000  # events buffered for one user during a read; past it, re-read again


def room_key(room_id: str) -> Key:
    return (topology.MESSAGES, topology.room_binding(room_id))


USER_EVENTS: Key = (topology.EVENTS, topology.USER_EVENTS)  # every user's events


class RoomState:
    __slots__ = ("clock", "id", "local", "needs_members", "obj", "refreshing")

    def __init__(self, obj: dict[str, Any]) -> None:
        self.id: str = obj["id"]
        self.obj = obj  # the public room object (what "joined"/"ready" carry)
        self.local: set[str] = set()  # local user ids who are members
        self.clock = 0  # newest sent_ms seen here: a new message is stamped after it
        # a read must replace what is held even at the same version: an event was missed, or
        # the room shrank to a small one and its member list is not known
        self.needs_members = False
        self.refreshing = False

    @property
    def version(self) -> int:
        return int(self.obj.get("version", 0))

    @property
    def members(self) -> list[str] | None:
        m = self.obj.get("members")
        return m if isinstance(m, list) else None


class UserState:
    __slots__ = (
        "conns",
        "gap",
        "id",
        "loads",
        "lock",
        "pending",
        "read",
        "rooms",
        "seq",
        "stale",
        "username",
    )

    def __init__(self, user_id: str, username: str) -> None:
        self.id = user_id
        self.username = username
        self.conns: set[Connection] = set()
        self.rooms: set[str] = set()
        self.seq = -1  # membership_seq applied; -1: never read
        self.pending: list[dict[str, Any]] | None = None  # events waiting for a read
        self.loads = 0  # reads in flight
        self.lock = asyncio.Lock()
        self.stale = False  # may have missed an event: no delivery, no send, until re-read
        self.gap = False  # pending overflowed during a read: read again after it
        # the furthest read position known here per room ((sent_ms, message id)): a read frame
        # at or behind it costs no database write (services/gateway/reads.py)
        self.read: dict[str, tuple[int, str]] = {}


Resync = Callable[[UserState], Awaitable[None]]


class Membership:
    def __init__(
        self,
        store: GatewayStore,
        bindings: Bindings,
        is_online: Callable[[str], bool],
        *,
        presence_batch: float = 0.05,
        on_resync: Resync | None = None,
    ) -> None:
        self.store = store
        self.bindings = bindings
        self.is_online = is_online
        self.on_resync = on_resync
        # awaited before a client is told it joined a room: history then holds what was routed
        # to the room before it was bound here (the service waits for the shard's writer)
        self.before_joined: Callable[[str], Awaitable[Any]] | None = None
        # direct rooms a send here is creating this moment (sending.py): nothing was sent to
        # them before, so their `joined` waits for no history (and comes before the send's ack)
        self.new_rooms: set[str] = set()
        self.users: dict[str, UserState] = {}
        self.rooms: dict[str, RoomState] = {}
        self.contact_rooms: dict[str, set[str]] = {}  # username -> small rooms cached here
        self.fanout = PresenceFanout(self, is_online, presence_batch)
        self.trusted = True  # False from a broker disconnect until everything is re-read
        self._tasks: set[asyncio.Task[Any]] = set()
        # sends waiting for a joining that is on its way here (member_soon)
        self._join_waiters: dict[tuple[str, str], list[asyncio.Future[None]]] = {}

    # queries -------------------------------------------------------------------------------
    def may_act(self, user_id: str) -> bool:
        """The user's state is current (no gap, no recovery in progress)."""
        us = self.users.get(user_id)
        return self.trusted and us is not None and not us.stale

    def is_member(self, user_id: str, room_id: str) -> bool:
        us = self.users.get(user_id)
        return us is not None and room_id in us.rooms

    async def member_soon(self, user_id: str, room_id: str, timeout: float) -> bool:
        """``is_member``, waiting up to ``timeout`` seconds for a joining still on its way here
        (a room created over REST a moment ago: the client may send to it before its event
        has come through the broker)."""
        if self.is_member(user_id, room_id):
            return True
        key = (user_id, room_id)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._join_waiters.setdefault(key, []).append(fut)
        try:
            await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            pass
        finally:
            waiting = self._join_waiters.get(key)
            if waiting is not None and fut in waiting:
                waiting.remove(fut)
                if not waiting:
                    del self._join_waiters[key]
        return self.is_member(user_id, room_id)

    def recipients(self, room_id: str) -> Iterator[Connection]:
        """The connections a room's live message goes to (none while untrusted)."""
        room = self.rooms.get(room_id)
        if room is None or not self.trusted:
            return
        for uid in room.local:
            us = self.users.get(uid)
            if us is not None and not us.stale:
                yield from us.conns

    def watchers(self, username: str) -> set[str]:
        """Local users who have ``username`` as a contact."""
        out: set[str] = set()
        for rid in self.contact_rooms.get(username, ()):
            room = self.rooms.get(rid)
            if room is not None:
                out.update(room.local)
        return out

    def contacts_online(self, us: UserState) -> list[str]:
        names: set[str] = set()
        for rid in us.rooms:
            room = self.rooms.get(rid)
            members = room.members if room is not None else None
            if members:
                names.update(members)
        names.discard(us.username)
        return sorted(n for n in names if self.is_online(n))

    def direct_room_with(self, user_id: str, username: str) -> str | None:
        us = self.users.get(user_id)
        if us is None:
            return None
        for rid in us.rooms:
            room = self.rooms.get(rid)
            if room is not None and room.obj.get("kind") == "direct":
                members = room.members or ()
                if username in members and username != us.username:
                    return rid
        return None

    # connections ---------------------------------------------------------------------------
    async def attach(self, conn: Connection) -> list[dict[str, Any]]:
        """Register a connection (held until ``ready``) and read its user's rooms (bind
        first, then read): the room objects for ``ready``, most recently active first."""
        us = self.users.get(conn.user_id)
        if us is None:
            us = self.users[conn.user_id] = UserState(conn.user_id, conn.username)
        us.conns.add(conn)
        order = await self.load(us)
        rank = {rid: i for i, rid in enumerate(order)}
        ids = sorted(us.rooms, key=lambda r: rank.get(r, len(rank)))
        return [self.rooms[r].obj for r in ids if r in self.rooms]

    def detach(self, conn: Connection) -> None:
        us = self.users.get(conn.user_id)
        if us is None:
            return
        us.conns.discard(conn)
        if us.conns:
            return
        del self.users[us.id]
        for rid in list(us.rooms):
            room = self.rooms.get(rid)
            if room is not None:
                room.local.discard(us.id)
                if not room.local:
                    self._drop_room(room)
        us.rooms.clear()

    # reading -------------------------------------------------------------------------------
    async def wait_bound(self, us: UserState) -> bool:
        """Once every room of the user is bound here; tried again while the broker is away.
        False only if the user left (no connection here any more)."""
        while self.users.get(us.id) is us:
            fut = self.bindings.wait([room_key(r) for r in us.rooms])
            if fut is None or await fut:
                return True
        return False

    async def load(self, us: UserState) -> list[str]:
        """Read a user's rooms and apply them; their events wait meanwhile (they are always
        bound: ``user.*``). Rooms new here are bound, then read again, in the background. The
        room ids, most recently active first."""
        async with us.lock:
            us.loads += 1
            if us.pending is None:
                us.pending = []
            try:
                snap = await asyncio.to_thread(self.store.user_snapshot, us.id)
                if snap is None:
                    raise LookupError(f"user {us.id} is gone")
                seq, ids = snap
                objs = await self._read_rooms([r for r in ids if r not in self.rooms])
                if self.users.get(us.id) is us:
                    fresh = self._apply_snapshot(us, seq, ids, objs)
                    if fresh:
                        self._spawn(self._refresh_when_bound(fresh))
                return ids
            finally:
                us.loads -= 1
                self._replay(us)

    async def _refresh_when_bound(self, room_ids: list[str]) -> None:
        """Rooms read before their key was bound: read them again once it is, so that no
        change between the read and the bind is missed."""
        fut = self.bindings.wait([room_key(r) for r in room_ids])
        if fut is not None and not await fut:
            return  # the broker is away: the recovery reads everything again
        await self.refresh(room_ids)

    async def _read_rooms(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return await asyncio.to_thread(self.store.rooms, ids) if ids else {}

    def _apply_snapshot(
        self, us: UserState, seq: int, ids: list[str], objs: dict[str, dict[str, Any]]
    ) -> list[str]:
        """Make the user's rooms what was read; the ids of rooms that are new here."""
        if seq < us.seq:
            return []  # what we hold is newer (cannot happen for a read started later)
        ready = [c for c in us.conns if c.held is None]  # held ones learn it from "ready"
        wanted = set(ids)
        fresh: list[str] = []
        for rid in list(us.rooms - wanted):
            self._leave(us, rid, None, ready)
        for rid in ids:
            if rid in us.rooms:
                continue
            room = self.rooms.get(rid)
            if room is None:
                obj = objs.get(rid)
                if obj is None:  # dropped here while we read: read this user again
                    us.gap = True
                    continue
                room = self._add_room(obj)
                fresh.append(rid)
            self._join(us, room)
            if ready:
                self._spawn(self._joined_when_bound(us, room, False, ready))
        us.seq = seq
        if us.stale and not us.gap:
            us.stale = False
            if self.on_resync is not None:
                self._spawn(self.on_resync(us))
        return fresh

    def _replay(self, us: UserState) -> None:
        pending, us.pending = us.pending or [], None
        if us.loads > 0:
            us.pending = []  # another read is in flight: keep buffering after this replay
        for ev in pending:
            self._apply_user_event(us, ev)
        if us.gap and us.loads == 0 and self.users.get(us.id) is us:
            us.gap = False
            self._reload(us)

    def _reload(self, us: UserState) -> None:
        """Re-read a user who may have missed an event: buffer from now, read, resync."""
        us.stale = True
        if us.pending is None:
            us.pending = []
        self._spawn(self._reload_task(us))

    async def _reload_task(self, us: UserState) -> None:
        delay = 0.2
        while self.users.get(us.id) is us:
            try:
                await self.load(us)
                return
            except Exception as exc:
                log.warning("re-reading user %s failed (%s); retrying", us.id, exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)

    # user events ---------------------------------------------------------------------------
    def on_user_event(self, ev: dict[str, Any], new_room: bool = False) -> None:
        """``new_room``: a ``joined`` of a room created this moment (a first direct message):
        nothing was sent to it before, so ``joined`` need not wait for history."""
        us = self.users.get(str(ev["user_id"]))
        if us is None:
            return
        if us.pending is not None:
            if len(us.pending) >= PENDING_MAX:
                us.pending.clear()
                us.gap = True
            else:
                us.pending.append(ev)
            return
        self._apply_user_event(us, ev, new_room)

    def _apply_user_event(self, us: UserState, ev: dict[str, Any], new_room: bool = False) -> None:
        seq = int(ev["seq"])
        if seq <= us.seq:
            return  # already reflected (a duplicate, or older than what was read)
        if seq != us.seq + 1:
            log.info("user %s: event %d after %d, re-reading", us.id, seq, us.seq)
            self._reload(us)
            assert us.pending is not None
            us.pending.append(ev)
            return
        us.seq = seq
        obj = ev["room"]
        rid = str(obj["id"])
        if ev["event"] == "joined":
            if rid in us.rooms:
                return
            room = self.rooms.get(rid)
            fresh = room is None
            if room is None:
                room = self._add_room(obj)
            self._join(us, room)
            new_room = new_room or rid in self.new_rooms
            wait_history = self.before_joined is not None and not new_room
            if not fresh and self.bindings.wait([room_key(rid)]) is None and not wait_history:
                self._tell_joined(us, room, us.conns)
            else:
                self._spawn(self._joined_when_bound(us, room, fresh, None, wait_history))
        elif ev["event"] == "left":
            if rid in us.rooms:
                self._leave(us, rid, obj, us.conns)

    async def _joined_when_bound(
        self,
        us: UserState,
        room: RoomState,
        fresh: bool,
        conns: list[Connection] | None,
        wait_history: bool = False,
    ) -> None:
        fut = self.bindings.wait([room_key(room.id)])
        if fut is not None:
            await fut
        if wait_history and self.before_joined is not None:
            # a room just joined: what was sent to it before it was bound here reached no
            # socket here; once the shard's writer has passed it, the client's first read of
            # the room finds it (a connection's own rooms are covered by its `synced`)
            await self.before_joined(room.id)
        if room.id in us.rooms and self.users.get(us.id) is us:
            self._tell_joined(us, room, us.conns if conns is None else conns)
        if fresh:  # bound now: read it, so nothing that happened before the bind is missed
            await self.refresh([room.id])

    # room events ---------------------------------------------------------------------------
    def on_room_event(self, ev: dict[str, Any]) -> None:
        room = self.rooms.get(str(ev["room_id"]))
        if room is None:
            return
        version = int(ev["version"])
        if version <= room.version:
            return
        gap = version != room.version + 1
        kind = ev["event"]
        if kind in ("member_joined", "member_left"):
            self._member_delta(
                room,
                kind,
                str(ev["username"]),
                str(ev["user_id"]),
                int(ev["member_count"]),
                version,
            )
        elif kind == "updated":
            self._replace(room, dict(ev["room"]))
            self._tell_local(room, {"type": "room", "event": "updated", "room": room.obj})
        if gap:
            room.needs_members = True  # what the missing event changed: only a read tells
        if room.needs_members:
            self._spawn(self.refresh([room.id]))

    def _member_delta(
        self, room: RoomState, kind: str, name: str, subject: str, count: int, version: int
    ) -> None:
        obj = room.obj = dict(room.obj)  # frames already built keep the old one
        members = room.members
        obj["member_count"] = count
        obj["version"] = version
        if members is not None:
            now = set(members)
            if kind == "member_joined":
                now.add(name)
            else:
                now.discard(name)
            self._unindex(room)
            if count <= CONTACT_ROOM_MAX:
                obj["members"] = sorted(now)
                self._index(room)
            else:
                obj.pop("members", None)
        elif count <= CONTACT_ROOM_MAX:
            room.needs_members = True  # small again: read its list (refresh)
        frame = {
            "type": "room",
            "event": kind,
            "room": room.id,
            "username": name,
            "member_count": count,
        }
        self._tell_local(room, frame, skip=subject)
        if kind == "member_left":
            us = self.users.get(subject)
            if us is not None and room.id in us.rooms:  # removed: stop at once
                self._leave(us, room.id, obj, us.conns)
        elif room.members is not None and self.is_online(name):
            self._tell_presence(room, name, skip=subject)  # a new contact of its members

    async def refresh(self, room_ids: list[str]) -> None:
        """Read rooms again (after a bind, a gap, or to get a small room's member list)."""
        todo = [r for r in room_ids if r in self.rooms and not self.rooms[r].refreshing]
        for rid in todo:
            self.rooms[rid].refreshing = True
        try:
            objs = await self._read_rooms(todo)
        except Exception as exc:
            log.warning("could not re-read %d rooms: %s", len(todo), exc)
            objs = {}
            for rid in todo:  # try again shortly: a gap must not stay
                self._spawn(self._refresh_later(rid))
        finally:
            for rid in todo:
                room = self.rooms.get(rid)
                if room is not None:
                    room.refreshing = False
        for rid, obj in objs.items():
            room = self.rooms.get(rid)
            if room is not None:
                self._apply_room_snapshot(room, obj)

    async def _refresh_later(self, room_id: str) -> None:
        await asyncio.sleep(1.0)
        await self.refresh([room_id])

    def _apply_room_snapshot(self, room: RoomState, obj: dict[str, Any]) -> None:
        if int(obj.get("version", 0)) < room.version:
            return
        if int(obj.get("version", 0)) == room.version and not room.needs_members:
            return
        old = room.obj
        room.needs_members = False
        self._replace(room, obj)
        before, after = old.get("members"), obj.get("members")
        if isinstance(before, list) and isinstance(after, list):
            count = obj["member_count"]
            for name in sorted(set(after) - set(before)):
                self._tell_local(
                    room,
                    {
                        "type": "room",
                        "event": "member_joined",
                        "room": room.id,
                        "username": name,
                        "member_count": count,
                    },
                )
                if self.is_online(name):
                    self._tell_presence(room, name, skip=None)
            for name in sorted(set(before) - set(after)):
                self._tell_local(
                    room,
                    {
                        "type": "room",
                        "event": "member_left",
                        "room": room.id,
                        "username": name,
                        "member_count": count,
                    },
                )
        elif any(
            old.get(k) != obj.get(k) for k in ("member_count", "name", "owner", "who_can_add")
        ):
            self._tell_local(room, {"type": "room", "event": "updated", "room": obj})

    # recovery ------------------------------------------------------------------------------
    def begin_recovery(self) -> list[UserState]:
        """The broker connection was lost: trust nothing until ``recover`` succeeds; every
        user's events wait from now. The users to pass to ``end_recovery``."""
        self.trusted = False
        held = list(self.users.values())
        for us in held:
            us.loads += 1
            if us.pending is None:
                us.pending = []
        return held

    async def recover(self) -> None:
        """Read every local user again (their events are bound again by now: the caller
        waits for the gateway's own keys first); rooms are read again once their keys are
        bound again. Raises on failure: the caller retries until it succeeds."""
        users = list(self.users.values())
        snaps: dict[str, Snapshot] = await asyncio.to_thread(
            self.store.user_snapshots, [us.id for us in users]
        )
        needed: set[str] = set()
        for _seq, ids in snaps.values():
            needed.update(r for r in ids if r not in self.rooms)
        objs = await self._read_rooms(sorted(needed))
        for us in users:
            snap = snaps.get(us.id)
            if snap is not None and self.users.get(us.id) is us:
                self._apply_snapshot(us, snap[0], snap[1], objs)
        self._spawn(self._refresh_when_bound(list(self.rooms)))

    def end_recovery(self, held: list[UserState], *, trusted: bool = True) -> None:
        if trusted:
            self.trusted = True
        for us in held:
            us.loads -= 1
            if us.loads == 0 or self.users.get(us.id) is not us:
                self._replay(us)

    # state changes -------------------------------------------------------------------------
    def _add_room(self, obj: dict[str, Any]) -> RoomState:
        room = RoomState(dict(obj))
        self.rooms[room.id] = room
        self._index(room)
        self.bindings.acquire([room_key(room.id)])
        return room

    def _drop_room(self, room: RoomState) -> None:
        self._unindex(room)
        del self.rooms[room.id]
        self.bindings.release([room_key(room.id)])

    def _replace(self, room: RoomState, obj: dict[str, Any]) -> None:
        self._unindex(room)
        room.obj = obj
        self._index(room)

    def _index(self, room: RoomState) -> None:
        for name in room.members or ():
            self.contact_rooms.setdefault(name, set()).add(room.id)

    def _unindex(self, room: RoomState) -> None:
        for name in room.members or ():
            rooms = self.contact_rooms.get(name)
            if rooms is not None:
                rooms.discard(room.id)
                if not rooms:
                    del self.contact_rooms[name]

    def _join(self, us: UserState, room: RoomState) -> None:
        us.rooms.add(room.id)
        room.local.add(us.id)
        for fut in self._join_waiters.pop((us.id, room.id), ()):
            if not fut.done():
                fut.set_result(None)

    def _leave(
        self,
        us: UserState,
        room_id: str,
        obj: dict[str, Any] | None,
        conns: Iterable[Connection],
    ) -> None:
        us.rooms.discard(room_id)
        us.read.pop(room_id, None)  # a member again later starts afresh
        room = self.rooms.get(room_id)
        frame_room = obj if obj is not None else (room.obj if room is not None else None)
        if frame_room is not None:
            text = orjson.dumps({"type": "room", "event": "left", "room": frame_room}).decode()
            for c in conns:
                c.send_text(text)
        if room is not None:
            room.local.discard(us.id)
            if not room.local:
                self._drop_room(room)

    # telling clients -----------------------------------------------------------------------
    def _tell_joined(self, us: UserState, room: RoomState, conns: Iterable[Connection]) -> None:
        conns = list(conns)
        text = orjson.dumps({"type": "room", "event": "joined", "room": room.obj}).decode()
        for c in conns:
            c.send_text(text)
        for name in room.members or ():  # new contacts: who of them is online, one frame
            if name != us.username and self.is_online(name):
                for c in conns:
                    self.fanout.tell(c, name, True)

    def _tell_local(self, room: RoomState, frame: dict[str, Any], skip: str | None = None) -> None:
        text = orjson.dumps(frame).decode()
        for uid in room.local:
            if uid == skip:
                continue
            us = self.users.get(uid)
            if us is not None:
                for c in us.conns:
                    c.send_text(text)

    def _tell_presence(self, room: RoomState, name: str, skip: str | None) -> None:
        for uid in room.local:
            us = self.users.get(uid)
            if uid == skip or us is None or us.username == name:
                continue
            for c in us.conns:
                self.fanout.tell(c, name, True)

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
