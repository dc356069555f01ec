"""Wire schema of the events services send each other over the bus (exchange ``chat.events``).

- ``room`` (routing key ``user.<user_id>``): the user's membership in a room changed.
  ``{"type":"room","event":"joined"|"left"|"updated","user_id","room":{room object}}``
- ``session_revoked`` (routing key ``session.revoked``): a session was logged out or killed.
  ``{"type":"session_revoked","sid","user_id","until"}`` (``until``: epoch seconds after which
  no access token of the session can be valid anyway)
- ``synced`` (routing key ``gw.<gateway_id>``): the history writer has committed every message
  that was in its queue before the gateway's marker.
  ``{"type":"synced","marker"}``
"""

from __future__ import annotations

from typing import Any, Literal

import orjson

from services.common import topology

RoomEvent = Literal["joined", "left", "updated"]


def room_event(event: RoomEvent, user_id: str, room: dict[str, Any]) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "room", "event": event, "user_id": user_id, "room": room})
    return topology.EVENTS, topology.user_key(user_id), body


def session_revoked(sid: str, user_id: str, until: float) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "session_revoked", "sid": sid, "user_id": user_id, "until": until})
    return topology.EVENTS, topology.SESSION_REVOKED, body


def synced(gateway_id: str, marker: str) -> tuple[str, str, bytes]:
    body = orjson.dumps({"type": "synced", "marker": marker})
    return topology.EVENTS, topology.gateway_key(gateway_id), body
