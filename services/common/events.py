"""Wire schema of the events services send each other over the bus.

On ``chat.events``:

- ``room`` (routing key ``user.<user_id>``): the user's own membership changed.
  ``{"type":"room","event":"joined"|"left","user_id","seq","room":{room object}}``. ``seq`` is
  the user's ``membership_seq`` after the change: a gateway applies each user's events in ``seq``
  order, drops one it has already seen (``seq`` not above the last) and re-reads the user's
  rooms when one is missing (a gap).
- ``session_revoked`` (routing key ``session.revoked``): a session was logged out or killed.
  ``{"type":"session_revoked","sid","user_id","until"}`` (``until``: epoch seconds after which
  no access token of the session can be valid anyway)
- ``read`` (routing key ``user.<user_id>`` from auth's ``POST /api/rooms/{id}/read``; from a
  gateway, ``gw.<gateway_id>`` of each other gateway the user is connected to): the user's read
  position in a room moved forwards.
  ``{"type":"read","user_id","room","message_id","sent_ms","origin"?:{"gw","conn"}}``; the
  gateways pass ``{"type":"read","room","message_id"}`` to the user's connections (but the
  ``origin`` one).
- ``muted`` (routing key ``user.<user_id>``): ``{"type":"muted","user_id","room","muted"}``.
- ``synced`` (routing key ``gw.<gateway_id>``): the writer of one history shard has committed
  every message that was in the shard's queue before the gateway's marker.
  ``{"type":"synced","marker","shard"}``

On ``chat.messages``, routing key ``room.<room_id>.member`` (what gateways bound to the room
receive; the history queue does not), one event per change whatever the room's size:

- ``{"type":"member","event":"member_joined"|"member_left","room_id","version","member_count",
  "username","user_id"}``
- ``{"type":"member","event":"updated","room_id","version","member_count","room":{room object}}``
  (name, owner or settings changed)

``version`` is the room's version after the change: a gateway applies a room's events in order,
drops stale ones and re-reads the room when one is missing.

History entries (docs/PROTOCOL.md, "History entries"): what goes to a room's history shard
(``room.<room_id>.msg.<shard>`` alone, or in a gateway's ``{"type":"batch"}`` on
``history.<shard>``), persistent and confirmed; the history writer stores them in queue order:

- ``edit_entry`` / ``delete_entry``: a member changed a stored message (the gateway has
  authorized it); ``message`` is the message as history will show it after the change (what
  the ack and the ``message_changed`` frames carry);
- ``notice_entry``: what happened in a room (joined, left, removed, renamed), stored as a
  message of kind ``notice``; ``notice_publish`` routes one to its room's shard.
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from services.common import topology
from services.common.ids import notice_client_msg_id, notice_id
from services.common.schema import message_object

UserRoomEvent = Literal["joined", "left"]
MemberEvent = Literal["member_joined", "member_left"]


def room_event(
    event: UserRoomEvent, user_id: str, seq: int, room: dict[str, Any]
) -> tuple[str, str, bytes]:
    body = orjson.dumps(
        {"type": "room", "event": event, "user_id": user_id, "seq": seq, "room": room}
    )
    return topology.EVENTS, topology.user_key(user_id), body


def member_event(
    event: MemberEvent,
    room_id: str,
    version: int,
    member_count: int,
    username: str,
    user_id: str,
) -> tuple[str, str, bytes]:
    body = orjson.dumps(
        {
            "type": "member",
            "event": event,
            "room_id": room_id,
            "version": version,
            "member_count": member_count,
            "username": username,
            "user_id": user_id,
        }
    )
    return topology.MESSAGES, topology.room_member_key(room_id), body


def room_updated(room: dict[str, Any]) -> tuple[str, str, bytes]:
    body = orjson.dumps(
        {
            "type": "member",
            "event": "updated",
            "room_id": room["id"],
            "version": room["version"],
            "member_count": room["member_count"],
            "room": room,
        }
    )
    return topology.MESSAGES, topology.room_member_key(room["id"]), body


def session_revoked(sid: str, user_id: str, until: float) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "session_revoked", "sid": sid, "user_id": user_id, "until": until})
    return topology.EVENTS, topology.SESSION_REVOKED, body


def read(
    user_id: str,
    room_id: str,
    message_id: str,
    sent_ms: int,
    origin: dict[str, str] | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "type": "read",
        "user_id": user_id,
        "room": room_id,
        "message_id": message_id,
        "sent_ms": sent_ms,
    }
    if origin is not None:
        body["origin"] = origin
    return body


def read_event(user_id: str, room_id: str, message_id: str, sent_ms: int) -> tuple[str, str, bytes]:
    """For every gateway (auth's REST call): they pass it to the user's connections."""
    body = orjson.dumps(read(user_id, room_id, message_id, sent_ms))
    return topology.EVENTS, topology.user_key(user_id), body


def muted_event(user_id: str, room_id: str, muted: bool) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "muted", "user_id": user_id, "room": room_id, "muted": muted})
    return topology.EVENTS, topology.user_key(user_id), body


def synced(gateway_id: str, marker: str, shard: int = 0) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "synced", "marker": marker, "shard": shard})
    return topology.EVENTS, topology.gateway_key(gateway_id), body


NoticeEvent = Literal["created", "joined", "left", "removed", "renamed"]


def edit_entry(
    message: dict[str, Any], actor_id: str, client_msg_id: str, at_ms: int, origin: Any = None
) -> dict[str, Any]:
    """``message``: the message object after the edit (new ``body``, ``edited_at`` = at_ms)."""
    return {
        "type": "edit",
        "message": message,
        "actor_id": actor_id,
        "client_msg_id": client_msg_id,
        "at_ms": at_ms,
        "origin": origin,
    }


def delete_entry(
    message: dict[str, Any], actor_id: str, client_msg_id: str, at_ms: int, origin: Any = None
) -> dict[str, Any]:
    """``message``: the message object after the delete (``body`` null, ``deleted`` true)."""
    return {
        "type": "delete",
        "message": message,
        "actor_id": actor_id,
        "client_msg_id": client_msg_id,
        "at_ms": at_ms,
        "origin": origin,
    }


def notice_entry(
    room_id: str,
    version: int,
    event: NoticeEvent,
    *,
    username: str | None,
    by: str | None,
    name: str | None = None,
    sent_ms: int,
) -> dict[str, Any]:
    """A notice of a room change, ``version`` being the room's version after it (the notice's
    id comes from it: relaying the same event twice stores one notice). ``username``: the
    member concerned; ``by``: who did it (the sender shown); ``name``: the new name (renamed)."""
    cmid = notice_client_msg_id(version)
    notice = {"event": event, "username": username, "by": by, "name": name}
    msg = message_object(
        notice_id(room_id, version),
        room_id,
        by or username or "",
        None,
        sent_ms,
        cmid,
        kind="notice",
        notice=notice,
    )
    return {"type": "message", "message": msg, "sender_id": room_id, "sent_ms": sent_ms}


def notice_staged(entry: dict[str, Any]) -> tuple[str, str, bytes]:
    """A notice for the outbox (``add_events``), staged in the transaction of the change it
    tells of: the relay publishes it to its room's shard of the moment, mandatory and
    persistent (``OutboxRelay``), and deletes the row only once the broker confirmed it
    (all-in-one: once the history writer committed it)."""
    room_id = entry["message"]["room"]
    return topology.MESSAGES, topology.room_history_key(room_id), orjson.dumps(entry)


def notice_publish(entry: dict[str, Any], shards: int) -> tuple[str, str, bytes]:
    """(exchange, routing key, body) of a notice to its room's history shard; publish it
    persistent (and mandatory) like a message. The room's gateways receive it too (they bind
    ``room.<id>.#``)."""
    room_id = entry["message"]["room"]
    return topology.MESSAGES, topology.room_msg_key(room_id, shards), orjson.dumps(entry)
