"""What a gateway remembers of the messages it has delivered (or accepted) lately.

One small record per message id, for the last ``SEEN_MAX`` messages: enough to deliver a
retried or doubly routed message once, to place a ``read`` of a message history has not stored
yet, and to authorize an ``edit`` or ``delete`` of a message that was acked a moment ago and is
still on its way to the database (docs/PROTOCOL.md, "Editing and deleting"). No body is kept
(the change brings its own text; a delete has none), so the memory is bounded by the count:
about 380 bytes a record with its key, 50 more than the room and time alone took (measured
with tracemalloc; ids and usernames are interned: a room's or a user's id is one string however
many of their messages are remembered), so about 38 MB when full.
"""

from __future__ import annotations

import sys
from typing import Any

SEEN_MAX = 100_000  # message ids delivered here (a retried message goes out once)
CHANGED_MAX = 20_000  # change ids delivered here (a change routed twice goes out once)
# A change of a message this gateway has not delivered yet: its live copy may still be on its
# way (the change came from another gateway, on another channel of the broker). Kept for a
# message sent within the window, so that the message, when it comes, goes out as changed.
EARLY_MAX = 1000
EARLY_WINDOW_MS = 60_000


class Recent:
    __slots__ = (
        "client_msg_id",
        "deleted",
        "edited_ms",
        "kind",
        "room",
        "sender",
        "sender_id",
        "sent_ms",
    )

    def __init__(
        self,
        room: str,
        sent_ms: int,
        sender_id: str,
        sender: str,
        client_msg_id: str,
        kind: str = "text",
        edited_ms: int | None = None,
        deleted: bool = False,
    ) -> None:
        self.room = sys.intern(room)
        self.sent_ms = sent_ms
        self.sender_id = sys.intern(sender_id)
        self.sender = sys.intern(sender)
        self.client_msg_id = client_msg_id
        self.kind = "notice" if kind == "notice" else "text"
        self.edited_ms = edited_ms
        self.deleted = deleted

    @classmethod
    def of(cls, event: dict[str, Any], sent_ms: int) -> Recent:
        """From a message event (``{"type":"message","message","sender_id",...}``)."""
        msg = event["message"]
        return cls(
            str(msg["room"]),
            sent_ms,
            str(event["sender_id"]),
            str(msg["sender"]),
            str(msg["client_msg_id"]),
            str(msg.get("kind") or "text"),
        )
