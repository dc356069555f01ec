"""Identifiers and timestamps.

- ``new_id()``: a 26-character, time-ordered id (48-bit milliseconds + 80 random bits, Crockford
  base32, lower case) for users, rooms and sessions.
- ``message_id(sender_id, client_msg_id)``: the id of a message is *derived* from the sender and
  the client's idempotency key, so a retried send gets the same id on any gateway without any
  shared state; the history table's primary key then makes a redelivered or retried message one
  row, and gateways drop a second live copy by id.
"""

from __future__ import annotations

import hashlib
import os
import time
from datetime import UTC, datetime, timedelta

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def _b32(value: int, length: int) -> str:
    out = []
    for _ in range(length):
        out.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(out))


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def new_id(ms: int | None = None) -> str:
    ms = now_ms() if ms is None else ms
    rand = int.from_bytes(os.urandom(10), "big")
    return _b32(ms, 10) + _b32(rand, 16)


def message_id(sender_id: str, client_msg_id: str) -> str:
    digest = hashlib.sha256(f"{sender_id}\x00{client_msg_id}".encode()).digest()
    return "m" + _b32(int.from_bytes(digest[:16], "big"), 25)


def change_id(actor_id: str, client_msg_id: str) -> str:
    digest = hashlib.sha256(f"change\x00{actor_id}\x00{client_msg_id}".encode()).digest()
    return "c" + _b32(int.from_bytes(digest[:16], "big"), 25)


def notice_client_msg_id(version: int) -> str:
    return f"notice:{version}"


def notice_id(room_id: str, version: int) -> str:
    """A notice is stored with ``sender_id`` = the room's id and this ``client_msg_id``: no
    user's send can take its id."""
    return message_id(room_id, notice_client_msg_id(version))


_last_second: list[object] = [-1, ""]  # (second, "YYYY-MM-DDTHH:MM:SS.") of the last call


def iso_ms(ms: int) -> str:
    """RFC 3339 UTC with milliseconds: 2026-11-23T10:15:30.123Z."""
    second = ms // 1000
    if _last_second[0] != second:  # on the hot path the second rarely changes between calls
        dt = datetime.fromtimestamp(second, tz=UTC)
        _last_second[1] = dt.strftime("%Y-%m-%dT%H:%M:%S.")
        _last_second[0] = second
    return f"{_last_second[1]}{ms % 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def parse_ms(text: str) -> int:
    """Epoch milliseconds of an ``iso_ms`` timestamp (ValueError if it is not one)."""
    dt = datetime.fromisoformat(text)
    if dt.tzinfo is None:
        raise ValueError(f"no time zone in {text!r}")
    return (dt - _EPOCH) // timedelta(milliseconds=1)
