"""Decoding what arrives on the history queue (see the team brief, "Message wire format").

A delivery is one of:

- a message: ``{"type":"message","message":{"id","room","sender","body","sent_at",
  "client_msg_id"},"sender_id","sent_ms","origin"}`` on ``room.<room_id>.msg.<shard>`` ->
  ``Row``;
- a batch of messages: ``{"type":"batch","messages":[message, ...]}`` on ``history.<shard>``
  (what a gateway sends: everything it accepted for the shard in one turn of its loop) ->
  ``Batch`` (its rows, and the entries that can never be written, each dead-lettered alone);
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

ID_MAX = 26  # String(26) columns: message, room and sender ids
USERNAME_MAX = 32
CLIENT_MSG_ID_MAX = 64
MARKER_MAX = 128
GATEWAY_MAX = 200
SENT_MS_MAX = 2**63 - 1  # BIGINT


@dataclass(frozen=True)
class Row:
    """One message as the ``messages`` table stores it."""

    id: str
    room_id: str
    sender_id: str
    sender: str
    body: str
    sent_ms: int
    client_msg_id: str

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
        }


@dataclass(frozen=True)
class Marker:
    marker: str
    gw: str
    shard: int = 0


@dataclass(frozen=True)
class Invalid:
    reason: str  # "undecodable" | "invalid"
    detail: str


@dataclass(frozen=True)
class Batch:
    rows: list[Row]
    invalid: list[tuple[Invalid, bytes]]  # what can never be written, with its own bytes


Item = Row | Marker | Invalid | Batch
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
        if kind == "batch":
            return _batch(doc)
        raise ValueError(f"unknown type {kind!r}")
    except ValueError as exc:
        return Invalid("invalid", str(exc))


def _row(doc: dict[str, Any], routing_key: str) -> Row:
    msg = doc.get("message")
    if not isinstance(msg, dict):
        raise ValueError("message must be an object")
    sent_ms = doc.get("sent_ms")
    if not isinstance(sent_ms, int) or isinstance(sent_ms, bool) or not 0 <= sent_ms <= SENT_MS_MAX:
        raise ValueError("sent_ms must be a non-negative integer")
    body = msg.get("body")
    if not isinstance(body, str):
        raise ValueError("body must be a string")
    row = Row(
        id=_text(msg, "id", ID_MAX),
        room_id=_text(msg, "room", ID_MAX),
        sender_id=_text(doc, "sender_id", ID_MAX),
        sender=_text(msg, "sender", USERNAME_MAX),
        body=body,
        sent_ms=sent_ms,
        client_msg_id=_text(msg, "client_msg_id", CLIENT_MSG_ID_MAX),
    )
    if routing_key.rsplit(".", 1)[0] != f"room.{row.room_id}.msg":
        raise ValueError(f"routing key {routing_key!r} does not match room {row.room_id!r}")
    return row


def is_marker_key(routing_key: str) -> bool:
    return routing_key.startswith("room._sync.msg")


def _batch(doc: dict[str, Any]) -> Batch:
    messages = doc.get("messages")
    if not isinstance(messages, list) or not 1 <= len(messages) <= MAX_BATCH:
        raise ValueError(f"messages must be a list of 1..{MAX_BATCH}")
    rows: list[Row] = []
    invalid: list[tuple[Invalid, bytes]] = []
    for m in messages:
        try:
            if not isinstance(m, dict) or m.get("type") != "message":
                raise ValueError("a batch holds messages")
            room = (
                (m.get("message") or {}).get("room") if isinstance(m.get("message"), dict) else ""
            )
            rows.append(_row(m, f"room.{room}.msg.0"))  # the shard's binding routed the batch
        except ValueError as exc:
            invalid.append((Invalid("invalid", str(exc)), orjson.dumps(m)))
    return Batch(rows, invalid)
