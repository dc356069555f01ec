"""Decoding what arrives on the history queue (docs/PROTOCOL.md, "History entries").

A delivery is one of:

- a message: ``{"type":"message","message":{"id","room","sender","body","sent_at",
  "client_msg_id"},"sender_id","sent_ms","origin"}`` on ``room.<room_id>.msg.<shard>`` ->
  ``Row``. A notice is a message with ``"kind":"notice"``, ``"body":null`` and
  ``"notice":{"event","username","by","name"}`` (``sender_id``: the room's id);
- an edit or a delete of a stored message: ``{"type":"edit"|"delete","message":{"id","room",
  "body" (edit: the new text), ...},"actor_id","client_msg_id","at_ms","origin"}``, on the
  message's room key like a message -> ``Change``;
- a batch: ``{"type":"batch","messages":[entry, ...]}`` on ``history.<shard>`` (what a gateway
  sends: everything it accepted for the shard in one turn of its loop), entries being messages,
  edits and deletes, in the order they were accepted -> ``Batch`` (its items in that order,
  and the entries that can never be written, each dead-lettered alone);
- a sync marker: ``{"type":"marker","marker","gw","shard"}`` on ``room._sync.msg.<shard>`` ->
  ``Marker``;
- anything else -> ``Invalid`` (it can never be written: it goes to the dead-letter queue).

Checks are the columns' limits, so a row that passes is storable on MySQL and SQLite alike;
anything the database still rejects is isolated by the writer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from services.common.ids import change_id

ID_MAX = 26  # String(26) columns: message, room and sender ids
USERNAME_MAX = 32
CLIENT_MSG_ID_MAX = 64
MARKER_MAX = 128
GATEWAY_MAX = 200
SENT_MS_MAX = 2**63 - 1  # BIGINT
NAME_MAX = 100  # rooms.name
NOTICE_EVENTS = ("created", "joined", "left", "removed", "renamed")


@dataclass(frozen=True)
class Row:
    """One message as the ``messages`` table stores it."""

    id: str
    room_id: str
    sender_id: str
    sender: str
    body: str | None  # None for a notice
    sent_ms: int
    client_msg_id: str
    kind: str = "text"  # text | notice
    notice: str | None = None  # a notice's JSON ({"event","username","by","name"})

    def values(self, written_ms: int) -> dict[str, Any]:
        return {
            "id": self.id,
            "room_id": self.room_id,
            "sender_id": self.sender_id,
            "sender": self.sender,
            "body": self.body,
            "sent_ms": self.sent_ms,
            "client_msg_id": self.client_msg_id,
            "written_ms": written_ms,
            "kind": self.kind,
            "notice": self.notice,
            "edited_ms": None,
            "deleted": False,
            "deleted_ms": None,
        }


@dataclass(frozen=True)
class Change:
    """An edit (``body``: the new text) or a delete of the stored message ``message_id``, by
    ``actor_id``; ``id`` is ``change_id(actor_id, client_msg_id)``."""

    id: str
    kind: str  # edit | delete
    message_id: str
    room_id: str
    actor_id: str
    client_msg_id: str
    at_ms: int
    body: str | None = None


@dataclass(frozen=True)
class Marker:
    marker: str
    gw: str
    shard: int = 0


@dataclass(frozen=True)
class Invalid:
    reason: str  # "undecodable" | "invalid"
    detail: str


Entry = Row | Change  # what a batch holds, in order


@dataclass(frozen=True)
class Batch:
    rows: list[Entry]
    invalid: list[tuple[Invalid, bytes]]  # what can never be written, with its own bytes


Item = Row | Change | Marker | Invalid | Batch
MAX_BATCH = 10_000  # messages in one batch delivery


def _text(obj: dict[str, Any], key: str, max_len: int, *, empty_ok: bool = False) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    if (not value and not empty_ok) or len(value) > max_len:
        raise ValueError(f"{key} must be 1..{max_len} characters")
    return value


def decode(body: bytes, routing_key: str) -> Item:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        return Invalid("undecodable", f"not JSON: {exc}")
    if not isinstance(doc, dict):
        return Invalid("undecodable", "not a JSON object")
    try:
        kind = doc.get("type")
        if kind == "marker":
            shard = doc.get("shard", 0)
            if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
                raise ValueError("shard must be a non-negative integer")
            return Marker(_text(doc, "marker", MARKER_MAX), _text(doc, "gw", GATEWAY_MAX), shard)
        if kind == "message":
            return _row(doc, routing_key)
        if kind in ("edit", "delete"):
            return _change(doc, routing_key)
        if kind == "batch":
            return _batch(doc)
        raise ValueError(f"unknown type {kind!r}")
    except ValueError as exc:
        return Invalid("invalid", str(exc))


def _row(doc: dict[str, Any], routing_key: str) -> Row:
    msg = doc.get("message")
    if not isinstance(msg, dict):
        raise ValueError("message must be an object")
    sent_ms = _ms(doc, "sent_ms")
    kind = msg.get("kind", "text")
    body = msg.get("body")
    notice: str | None = None
    if kind == "text":
        if not isinstance(body, str):
            raise ValueError("body must be a string")
    elif kind == "notice":
        if body is not None:
            raise ValueError("a notice has no body")
        notice = _notice(msg.get("notice"))
    else:
        raise ValueError("kind must be 'text' or 'notice'")
    row = Row(
        id=_text(msg, "id", ID_MAX),
        room_id=_text(msg, "room", ID_MAX),
        sender_id=_text(doc, "sender_id", ID_MAX),
        sender=_text(msg, "sender", USERNAME_MAX),
        body=body,
        sent_ms=sent_ms,
        client_msg_id=_text(msg, "client_msg_id", CLIENT_MSG_ID_MAX),
        kind=kind,
        notice=notice,
    )
    _check_key(routing_key, row.room_id)
    return row


def _ms(doc: dict[str, Any], key: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= SENT_MS_MAX:
        raise ValueError(f"{key} must be a non-negative integer")
    return value


def _check_key(routing_key: str, room_id: str) -> None:
    if routing_key.rsplit(".", 1)[0] != f"room.{room_id}.msg":
        raise ValueError(f"routing key {routing_key!r} does not match room {room_id!r}")


def _optional(obj: dict[str, Any], key: str, max_len: int) -> str | None:
    value = obj.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not 1 <= len(value) <= max_len:
        raise ValueError(f"notice.{key} must be null or a string of 1..{max_len} characters")
    return value


def _notice(notice: Any) -> str:
    """A notice's JSON as stored: exactly the four keys, checked."""
    if not isinstance(notice, dict):
        raise ValueError("a notice needs 'notice': an object")
    event = notice.get("event")
    if event not in NOTICE_EVENTS:
        raise ValueError(f"notice.event must be one of {', '.join(NOTICE_EVENTS)}")
    value = {
        "event": event,
        "username": _optional(notice, "username", USERNAME_MAX),
        "by": _optional(notice, "by", USERNAME_MAX),
        "name": _optional(notice, "name", NAME_MAX),
    }
    return orjson.dumps(value).decode()


def _change(doc: dict[str, Any], routing_key: str) -> Change:
    kind = doc["type"]
    msg = doc.get("message")
    if not isinstance(msg, dict):
        raise ValueError("message must be an object")
    body: str | None = None
    if kind == "edit":
        body = msg.get("body")
        if not isinstance(body, str) or not body:
            raise ValueError("an edit's message.body must be a non-empty string")
    actor_id = _text(doc, "actor_id", ID_MAX)
    cmid = _text(doc, "client_msg_id", CLIENT_MSG_ID_MAX)
    change = Change(
        id=change_id(actor_id, cmid),
        kind=kind,
        message_id=_text(msg, "id", ID_MAX),
        room_id=_text(msg, "room", ID_MAX),
        actor_id=actor_id,
        client_msg_id=cmid,
        at_ms=_ms(doc, "at_ms"),
        body=body,
    )
    _check_key(routing_key, change.room_id)
    return change


def is_marker_key(routing_key: str) -> bool:
    return routing_key.startswith("room._sync.msg")


def _batch(doc: dict[str, Any]) -> Batch:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
        raise ValueError(f"messages must be a list of 1..{MAX_BATCH}")
    rows: list[Entry] = []
    invalid: list[tuple[Invalid, bytes]] = []
    for m in messages:
        try:
            kind = m.get("type") if isinstance(m, dict) else None
            if kind not in ("message", "edit", "delete"):
                raise ValueError("a batch holds messages, edits and deletes")
            assert isinstance(m, dict)
            room = (
                (m.get("message") or {}).get("room") if isinstance(m.get("message"), dict) else ""
            )
            key = f"room.{room}.msg.0"  # the shard's binding routed the batch
            rows.append(_row(m, key) if kind == "message" else _change(m, key))
        except ValueError as exc:
            invalid.append((Invalid("invalid", str(exc)), orjson.dumps(m)))
    return Batch(rows, invalid)
