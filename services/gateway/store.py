"""What a gateway reads from (and the two things it writes to: direct rooms, read positions)
the database. Every function is blocking: the gateway calls them in a worker thread
(``asyncio.to_thread``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, text
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session

from services.common import readstate
from services.common.directory import (
    begin_snapshot,
    get_or_create_direct_room,
    membership_snapshot,
    room_ids_of_user,
    room_objects,
)
from services.common.models import User
from services.common.readstate import Position
from services.history import queries
from services.history import store as history_store

Snapshot = tuple[int, list[str]]  # (membership_seq, room ids)


class GatewayStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def user_snapshot(self, user_id: str) -> Snapshot | None:
        """The user's membership_seq and rooms (most recently active first), one snapshot;
        None if the user does not exist."""
        with Session(self.engine) as session:
            begin_snapshot(session)
            seq = session.execute(
                select(User.membership_seq).where(User.id == user_id)
            ).scalar_one_or_none()
            if seq is None:
                return None
            return int(seq), room_ids_of_user(session, user_id)

    def user_snapshots(self, user_ids: list[str]) -> dict[str, Snapshot]:
        """The same for many users at once (a gateway's recovery), one snapshot."""
        with Session(self.engine) as session:
            begin_snapshot(session)
            return membership_snapshot(session, user_ids)

    def is_member(self, user_id: str, room_id: str) -> bool:
        """Whether the database has the user in the room now (authoritative; the gateway's
        memory may not have heard of a joining yet)."""
        with Session(self.engine) as session:
            return readstate.is_member(session, room_id, user_id)

    def rooms(self, room_ids: list[str]) -> dict[str, dict[str, Any]]:
        if not room_ids:
            return {}
        with Session(self.engine) as session:
            return room_objects(session, room_ids)

    def read_view(
        self, user_id: str, room_ids: list[str]
    ) -> dict[str, tuple[readstate.ReadState, int]]:
        """The user's read state and unread count in each of these rooms (for ``ready``)."""
        with Session(self.engine) as session:
            states = readstate.read_states(session, user_id, room_ids)
            counts = readstate.unread_counts(session, user_id, states.values())
            return {rid: (st, counts.get(rid, 0)) for rid, st in states.items()}

    def message_position(self, room_id: str, message_id: str) -> Position | None:
        with Session(self.engine) as session:
            return readstate.message_position(session, room_id, message_id)

    def advance_read(self, user_id: str, room_id: str, pos: Position) -> bool:
        """Move the user's read position forwards (commits); True if it moved."""
        with Session(self.engine) as session:
            moved = readstate.advance(session, user_id, room_id, pos)
            session.commit()
            return moved

    def stored_message(self, mid: str, user_id: str) -> dict[str, Any] | None:
        """The user's message ``mid`` as history shows it now (a retried send), or None."""
        target = queries.message_target(self.engine, mid)
        if target is None or target.sender_id != user_id:
            return None
        return target.message

    def change_target(self, room_id: str, message_id: str) -> queries.Target | None:
        """The stored message of that room an edit or a delete names (None: not stored)."""
        return queries.change_target(self.engine, room_id, message_id)

    def changed_message(self, actor_id: str, client_msg_id: str) -> dict[str, Any] | None:
        """A retried edit or delete: if history has recorded the change, the message it
        changed as history shows it now; else None."""
        record = history_store.change_status(self.engine, actor_id, client_msg_id)
        return None if record is None else queries.stored_message(self.engine, record.message_id)

    def direct_room(
        self, user_id: str, username: str
    ) -> tuple[dict[str, Any], str, list[tuple[str, str, bytes]]]:
        """The direct room with ``username`` (created if needed: commits), the peer's id and
        the events a creation staged. LookupError / ValueError as get_or_create_direct_room."""
        with Session(self.engine, expire_on_commit=False) as session:
            room, _created, staged = get_or_create_direct_room(session, user_id, username)
            peer = session.execute(select(User.id).where(User.username == username)).scalar_one()
            return room, peer, staged
