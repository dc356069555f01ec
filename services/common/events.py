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
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from services.common import topology

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
