"""A small bounded mapping that forgets the oldest entries first."""

from __future__ import annotations

from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def add_new(self, key: K, value: V) -> bool:
        """Insert if absent; True if it was new."""
        if key in self._data:
            return False
        self.put(key, value)
        return True

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


class AckCache:
    """Acks kept for retries (key: sender id and client_msg_id), bounded by an estimate of the
    bytes they hold, oldest out first: a client sending 4,000-character emoji bodies fills it
    by size, never past ``max_bytes``."""

    ENTRY_OVERHEAD = 400  # the dict, its keys and the small fields of a message object

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self._data: OrderedDict[tuple[str, str], tuple[dict[str, object], int]] = OrderedDict()

    @classmethod
    def size_of(cls, msg: dict[str, object]) -> int:
        body = msg.get("body")
        # a str holds up to 4 bytes a character (emoji); len() is cheap, encode() is not
        return cls.ENTRY_OVERHEAD + (4 * len(body) if isinstance(body, str) else 0)

    def get(self, key: tuple[str, str]) -> dict[str, object] | None:
        hit = self._data.get(key)
        return None if hit is None else hit[0]

    def replace(self, key: tuple[str, str], msg: dict[str, object]) -> None:
        """Change a held ack in place (an edited or deleted message: a retried send is not
        answered with the old text); nothing if it is not held."""
        if key in self._data:
            self.put(key, msg)

    def put(self, key: tuple[str, str], msg: dict[str, object]) -> None:
        old = self._data.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        size = self.size_of(msg)
        self._data[key] = (msg, size)
        self.bytes += size
        while self.bytes > self.max_bytes and self._data:
            _, (_, gone) = self._data.popitem(last=False)
            self.bytes -= gone

    def __len__(self) -> int:
        return len(self._data)
