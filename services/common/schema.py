"""The wire schema: message objects and the client frames of the WebSocket protocol.

Parsing never raises anything but ``FrameError`` (with an API error code), whatever the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from services.common.ids import iso_ms

MAX_BODY = 4000
MAX_CLIENT_MSG_ID = 64
ID_RE = re.compile(r"^[0-9a-z]{26}$")
USERNAME_RE = re.compile(r"^[a-z0-9_.\-]{3,32}$")


class FrameError(Exception):
    def __init__(self, code: str, message: str, client_msg_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.client_msg_id = client_msg_id


def message_object(
    msg_id: str,
    room: str,
    sender: str,
    body: str | None,
    sent_ms: int,
    client_msg_id: str,
    *,
    kind: str = "text",
    edited_ms: int | None = None,
    deleted: bool = False,
    notice: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The message object of API.md, the same in history, search, acks and live frames:
    ``kind`` (``text`` | ``notice``), ``edited_at`` (null or a timestamp), ``deleted`` (a
    deleted message's ``body`` is null) and, for a notice only, ``notice``
    (``{"event","username","by","name"}``; its ``body`` is null)."""
    obj: dict[str, Any] = {
        "id": msg_id,
        "room": room,
        "sender": sender,
        "body": body,
        "sent_at": iso_ms(sent_ms),
        "client_msg_id": client_msg_id,
        "kind": kind,
        "edited_at": None if edited_ms is None else iso_ms(edited_ms),
        "deleted": deleted,
    }
    if kind == "notice":
        obj["notice"] = notice
    return obj


@dataclass(frozen=True)
class AuthFrame:
    token: str


@dataclass(frozen=True)
class SendFrame:
    client_msg_id: str
    body: str
    room: str | None
    to: str | None
    retry: bool


@dataclass(frozen=True)
class TypingFrame:
    room: str


@dataclass(frozen=True)
class PingFrame:
    pass


@dataclass(frozen=True)
class PresenceSubFrame:
    users: tuple[str, ...]


@dataclass(frozen=True)
class ReadFrame:
    room: str
    message_id: str


@dataclass(frozen=True)
class ChangeFrame:
    """``edit`` (``body``: the new text) or ``delete`` of the message ``message_id``."""

    kind: str  # edit | delete
    client_msg_id: str
    room: str
    message_id: str
    body: str | None
    retry: bool


MAX_PRESENCE_SUB = 500

ClientFrame = (
    AuthFrame | SendFrame | TypingFrame | PingFrame | PresenceSubFrame | ReadFrame | ChangeFrame
)


def parse_frame(text: str | bytes) -> ClientFrame:
    try:
        data = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise FrameError("invalid_frame", "frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise FrameError("invalid_frame", "a frame must be a JSON object")
    kind = data.get("type")
    if kind == "send":
        return _send(data)
    if kind in ("edit", "delete"):
        return _change(kind, data)
    if kind == "auth":
        token = data.get("token")
        if not isinstance(token, str) or not token:
            raise FrameError("invalid_frame", "auth needs a token")
        return AuthFrame(token)
    if kind == "typing":
        room = data.get("room")
        if not isinstance(room, str) or not room:
            raise FrameError("invalid_frame", "typing needs a room")
        return TypingFrame(room)
    if kind == "ping":
        return PingFrame()
    if kind == "presence_sub":
        return _presence_sub(data)
    if kind == "read":
        room, message_id = data.get("room"), data.get("message_id")
        if not isinstance(room, str) or not room or not isinstance(message_id, str):
            raise FrameError("invalid_frame", "read needs 'room' and 'message_id' (strings)")
        if not message_id or len(message_id) > 64:
            raise FrameError("invalid_frame", "'message_id' must be a message id")
        return ReadFrame(room[:64], message_id)
    if not isinstance(kind, str):
        raise FrameError("invalid_frame", "a frame needs a string 'type'")
    raise FrameError("invalid_frame", f"unknown frame type {kind[:40]!r}")


def _client_msg_id(data: dict[str, Any]) -> str:
    cmid = data.get("client_msg_id")
    if not isinstance(cmid, str) or not (1 <= len(cmid) <= MAX_CLIENT_MSG_ID):
        raise FrameError("invalid_frame", "client_msg_id must be a string of 1-64 characters")
    return cmid


def _body(data: dict[str, Any], cmid: str) -> str:
    """A message's text: 1..MAX_BODY characters, not only white space."""
    body = data.get("body")
    if not isinstance(body, str):
        raise FrameError("invalid_frame", "'body' must be a string", cmid)
    if not body.strip():
        raise FrameError("empty_body", "the message is empty", cmid)
    if len(body) > MAX_BODY:
        raise FrameError("body_too_long", f"the message is over {MAX_BODY} characters", cmid)
    return body


def _send(data: dict[str, Any]) -> SendFrame:
    cmid = _client_msg_id(data)
    room, to = data.get("room"), data.get("to")
    if (room is None) == (to is None):
        raise FrameError("invalid_frame", "send needs exactly one of 'room' or 'to'", cmid)
    if room is not None and not isinstance(room, str):
        raise FrameError("invalid_frame", "'room' must be a string", cmid)
    if to is not None and not isinstance(to, str):
        raise FrameError("invalid_frame", "'to' must be a string", cmid)
    body = _body(data, cmid)
    retry = data.get("retry", False)
    return SendFrame(
        client_msg_id=cmid,
        body=body,
        room=room,
        to=to.lower() if isinstance(to, str) else None,
        retry=retry is True,
    )


def _change(kind: str, data: dict[str, Any]) -> ChangeFrame:
    """``edit`` {room, message_id, body, client_msg_id} / ``delete`` {room, message_id,
    client_msg_id}; the body follows the rules of ``send``."""
    cmid = _client_msg_id(data)
    room, message_id = data.get("room"), data.get("message_id")
    if not isinstance(room, str) or not room:
        raise FrameError("invalid_frame", f"{kind} needs 'room' (a string)", cmid)
    if not isinstance(message_id, str) or not message_id:
        raise FrameError("invalid_frame", f"{kind} needs 'message_id' (a string)", cmid)
    body = _body(data, cmid) if kind == "edit" else None
    return ChangeFrame(
        kind=kind,
        client_msg_id=cmid,
        room=room[:64],
        message_id=message_id[:64],
        body=body,
        retry=data.get("retry", False) is True,
    )


def _presence_sub(data: dict[str, Any]) -> PresenceSubFrame:
    users = data.get("users")
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise FrameError("invalid_frame", "presence_sub needs 'users': a list of usernames")
    if len(users) > MAX_PRESENCE_SUB:
        raise FrameError("invalid_frame", f"presence_sub takes at most {MAX_PRESENCE_SUB} users")
    names = tuple(dict.fromkeys(u.lower() for u in users))
    if not all(USERNAME_RE.match(n) for n in names):
        raise FrameError("invalid_frame", "presence_sub: not a username")
    return PresenceSubFrame(names)
