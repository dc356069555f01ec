"""Editing and deleting messages: an ``edit`` or ``delete`` frame to the history entry that
carries it (docs/PROTOCOL.md, "Editing and deleting").

The gateway authorizes the change, then sends it the way it sends a message: into the history
batch of the room's shard (``Publisher``), so that it is queued after the message it changes and
the writer applies it in that order; the sender's ack comes once the broker has confirmed it
(all-in-one: once the writer has committed it), and every member's connections get
``message_changed``. ``Sender`` (sending.py) gives a retry the same answer, as for a send.

Authorization: the sender edits or deletes their own text message; a group's owner may also
delete anyone's. The message is found, in this order, in what this gateway delivered lately
(``recent``: a message acked a moment ago may not be in the database yet), in history, and,
failing both, in history again once the room's shard has passed a sync marker (everything
accepted before then is committed by then).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from services.common import events, topology
from services.common.bus import PublishError
from services.common.ids import now_ms, parse_ms
from services.common.schema import ID_RE, ChangeFrame, FrameError, message_object
from services.gateway.connection import Connection
from services.gateway.doubts import Doubts
from services.gateway.membership import Membership
from services.gateway.publisher import Publisher
from services.gateway.recent import Recent
from services.gateway.store import GatewayStore
from services.gateway.sync import SyncMarkers

log = logging.getLogger("chat.gateway.changes")

CATCH_UP_S = 5.0  # how long a change waits for the writer to pass its room's shard


def change_key(user_id: str, client_msg_id: str) -> tuple[str, str]:
    """The ack cache's key of a change (its own namespace: an edit never answers for a send
    that happens to reuse the ``client_msg_id``; no user id contains a NUL)."""
    return (f"{user_id}\x00change", client_msg_id)


@dataclass
class Target:
    """The message a change names, as far as this gateway knows it."""

    id: str
    room: str
    sender_id: str
    sender: str
    sent_ms: int
    client_msg_id: str
    kind: str
    edited_ms: int | None
    deleted: bool


class Changes:
    def __init__(
        self,
        gateway_id: str,
        store: GatewayStore,
        membership: Membership,
        markers: SyncMarkers,
        publisher: Publisher,
        recent: Callable[[str], Recent | None],
        shards: Callable[[], int],
    ) -> None:
        self.gw = gateway_id
        self.store = store
        self.membership = membership
        self.markers = markers
        self.publisher = publisher
        self.recent = recent
        self.shards = shards
        self.doubts: Doubts | None = None  # lost confirms settled later (the service sets it)

    async def accept(self, conn: Connection, frame: ChangeFrame) -> dict[str, Any]:
        """Authorize, publish durably, and return the changed message (what the ack and the
        ``message_changed`` frames carry). FrameError for a refusal."""
        cmid, room_id = frame.client_msg_id, frame.room
        if not ID_RE.match(room_id):
            raise FrameError("room_not_found", "no such room", cmid)
        if not self.membership.is_member(conn.user_id, room_id):
            raise FrameError("not_a_member", "you are not a member of this room", cmid)
        if not ID_RE.match(frame.message_id):
            raise FrameError("message_not_found", "no such message in this room", cmid)
        shard = topology.shard_of(room_id, self.shards())
        if frame.retry:
            done = await self._recorded(conn, frame, shard)
            if done is not None:
                if self.doubts is not None:  # its first answer may have been lost: so may its
                    # delivery to the members here (doubts.py)
                    entry = {
                        "type": frame.kind,
                        "actor_id": conn.user_id,
                        "client_msg_id": cmid,
                        "origin": {"gw": self.gw, "conn": conn.id},
                    }
                    self.doubts.found(entry, done)
                return done
        target = await self._target(room_id, frame.message_id, shard, cmid)
        self._authorize(conn, frame, target)
        if target.deleted:  # deleting it again: already done, nothing to store
            return _message(target, None, target.edited_ms, deleted=True)
        at = max(now_ms(), target.sent_ms, (target.edited_ms or 0) + 1)
        if frame.kind == "edit":
            msg = _message(target, frame.body, at, deleted=False)
            make = events.edit_entry
        else:
            msg = _message(target, None, target.edited_ms, deleted=True)
            make = events.delete_entry
        entry = make(msg, conn.user_id, cmid, at, {"gw": self.gw, "conn": conn.id})
        entry["sender_id"] = target.sender_id  # gateways refresh the original's ack with it
        try:
            await self.publisher.publish(entry)  # in history (confirmed), then to the members
        except PublishError as exc:
            log.warning("publish of a %s failed: %s", frame.kind, exc)
            if self.doubts is not None:  # the broker may have taken it all the same
                self.doubts.add(entry)
            raise FrameError(
                "unavailable", f"the {frame.kind} could not be stored right now; retry", cmid
            ) from exc
        return msg

    async def _recorded(
        self, conn: Connection, frame: ChangeFrame, shard: int
    ) -> dict[str, Any] | None:
        """A resend marked ``retry``: the message as history has it if history recorded the
        change already (after the writer has passed the room's shard), else None."""
        look = self.store.changed_message
        done = await asyncio.to_thread(look, conn.user_id, frame.client_msg_id)
        if done is None:
            if not await self.markers.caught_up(CATCH_UP_S, [shard]):
                raise FrameError(
                    "unavailable", "history is catching up; retry in a moment", frame.client_msg_id
                )
            done = await asyncio.to_thread(look, conn.user_id, frame.client_msg_id)
        return done

    async def _target(self, room_id: str, message_id: str, shard: int, cmid: str) -> Target:
        rec = self.recent(message_id)
        if rec is not None:
            if rec.room != room_id:
                raise FrameError("message_not_found", "no such message in this room", cmid)
            return Target(
                message_id,
                rec.room,
                rec.sender_id,
                rec.sender,
                rec.sent_ms,
                rec.client_msg_id,
                rec.kind,
                rec.edited_ms,
                rec.deleted,
            )
        found = await asyncio.to_thread(self.store.change_target, room_id, message_id)
        if found is None:
            # acked elsewhere a moment ago and not delivered here (yet)? Once the room's shard
            # is passed, history has every message accepted before now
            if not await self.markers.caught_up(CATCH_UP_S, [shard]):
                raise FrameError("unavailable", "history is catching up; retry in a moment", cmid)
            found = await asyncio.to_thread(self.store.change_target, room_id, message_id)
        if found is None:
            raise FrameError("message_not_found", "no such message in this room", cmid)
        m = found.message
        return Target(
            m["id"],
            m["room"],
            found.sender_id,
            m["sender"],
            parse_ms(m["sent_at"]),
            m["client_msg_id"],
            m["kind"],
            None if m["edited_at"] is None else parse_ms(m["edited_at"]),
            bool(m["deleted"]),
        )

    def _authorize(self, conn: Connection, frame: ChangeFrame, target: Target) -> None:
        cmid = frame.client_msg_id
        if target.kind != "text":
            raise FrameError("forbidden", "a notice cannot be changed", cmid)
        mine = target.sender_id == conn.user_id
        if frame.kind == "edit":
            if not mine:
                raise FrameError("forbidden", "you can only edit your own messages", cmid)
            if target.deleted:
                raise FrameError("message_not_found", "that message was deleted", cmid)
            return
        if mine:
            return
        room = self.membership.rooms.get(frame.room)
        obj = room.obj if room is not None else {}
        if obj.get("kind") == "group" and obj.get("owner") == conn.username:
            return
        raise FrameError(
            "forbidden", "only its sender or the group's owner can delete a message", cmid
        )


def _message(
    target: Target, body: str | None, edited_ms: int | None, *, deleted: bool
) -> dict[str, Any]:
    return message_object(
        target.id,
        target.room,
        target.sender,
        body,
        target.sent_ms,
        target.client_msg_id,
        edited_ms=edited_ms,
        deleted=deleted,
    )
