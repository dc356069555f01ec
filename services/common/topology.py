"""Every exchange, queue and routing key in one place (docs/ARCHITECTURE.md lists them).

All services declare the durable part of the topology on connect with identical arguments
(RabbitMQ refuses a redeclaration with other arguments), so a publish is never unroutable
because the history queue does not exist yet.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

MESSAGES = "chat.messages"  # topic: room.<room_id>.msg.<shard>, .typing, .member
EVENTS = "chat.events"  # topic: user.<user_id>, session.revoked, gw.<gateway_id>
PRESENCE = "chat.presence"  # fanout: gateway presence announcements and heartbeats
DEAD = "chat.dead"  # fanout: poison messages from the history queues
WRITERS = "chat.writers"  # fanout: history writers' heartbeats (how many share the shards)

DEAD_QUEUE = "chat.history.dead"


# history shards: every message of a room goes to the same one of N durable queues (quorum,
# single active consumer, delivery limit -> DEAD), chosen from the room id; the shard is the
# last word of the routing key, so a plain topic exchange does the sharding (no plugin)
def shard_of(room_id: str, shards: int) -> int:
    return zlib.crc32(room_id.encode()) % shards


def history_queue(shard: int) -> str:
    return f"chat.history.{shard}"


def history_binding(shard: int) -> str:
    return f"room.*.msg.{shard}"


def history_batch_key(shard: int) -> str:
    """A gateway's batch of messages for one shard (history only: gateways do not bind it)."""
    return f"history.{shard}"


def room_live_key(room_id: str) -> str:
    """Messages of a room for live delivery only (transient, unconfirmed: history has the
    durable copy); gateways bind it through ``room.<id>.#``, history does not."""
    return f"room.{room_id}.live"


def history_lock(shard: int) -> str:
    """An exclusive queue: held by the one writer consuming the shard (gone with its
    connection, so a dead writer's shards are free at once)."""
    return f"chat.history.{shard}.lock"


def room_msg_key(room_id: str, shards: int) -> str:
    return f"room.{room_id}.msg.{shard_of(room_id, shards)}"


def room_history_key(room_id: str) -> str:
    """A history entry staged in the auth service's outbox (a notice): the relay appends the
    shard of the configuration current when it publishes (``room_msg_key``)."""
    return f"room.{room_id}.msg"


def unsharded_room(routing_key: str) -> str | None:
    """The room of a ``room_history_key``, else None."""
    parts = routing_key.split(".")
    if len(parts) == 3 and parts[0] == "room" and parts[2] == "msg" and parts[1] != "_sync":
        return parts[1]
    return None


def is_history_entry_key(routing_key: str) -> bool:
    """``room.<id>.msg.<shard>``: an entry for a room's history shard (mandatory, persistent)."""
    parts = routing_key.split(".")
    return len(parts) == 4 and parts[0] == "room" and parts[2] == "msg"


def sync_key(shard: int) -> str:
    """A sync marker into one shard (``_sync`` is no room id: it is one word like one)."""
    return f"room._sync.msg.{shard}"


def room_typing_key(room_id: str) -> str:
    return f"room.{room_id}.typing"


def room_member_key(room_id: str) -> str:
    """Membership and settings changes of a room (gateways only; not history)."""
    return f"room.{room_id}.member"


def room_binding(room_id: str) -> str:
    """What a gateway binds for a room it has members of: messages (any shard), typing,
    member events."""
    return f"room.{room_id}.#"


def user_key(user_id: str) -> str:
    return f"user.{user_id}"


# what every gateway binds on EVENTS: membership changes are rare next to messages, so each
# gateway takes every user's events (one binding, whoever connects) and drops the ones of
# users it does not hold; a connect, a reconnect storm or a recovery binds nothing per user
USER_EVENTS = "user.*"


def gateway_key(gateway_id: str) -> str:
    return f"gw.{gateway_id}"


SESSION_REVOKED = "session.revoked"


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: str  # topic | fanout


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: dict[str, Any] = field(default_factory=dict)
    bindings: tuple[tuple[str, str], ...] = ()  # (exchange, routing key)


def exchanges() -> tuple[ExchangeSpec, ...]:
    return (
        ExchangeSpec(MESSAGES, "topic"),
        ExchangeSpec(EVENTS, "topic"),
        ExchangeSpec(PRESENCE, "fanout"),
        ExchangeSpec(DEAD, "fanout"),
        ExchangeSpec(WRITERS, "fanout"),
    )


def durable_queues(delivery_limit: int) -> tuple[QueueSpec, ...]:
    """Declared by every service on connect (identical arguments everywhere)."""
    return (QueueSpec(DEAD_QUEUE, arguments={"x-queue-type": "quorum"}, bindings=((DEAD, ""),)),)


def history_queues(shards: int, delivery_limit: int) -> tuple[QueueSpec, ...]:
    """The history shards of the current configuration (``Bus.declare_history``). In a
    cluster, each shard's leader goes to the node leading the fewest queues (``balanced``), so
    the shards' leaders spread over the nodes."""
    return tuple(
        QueueSpec(
            history_queue(k),
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD,
                "x-queue-leader-locator": "balanced",
            },
            bindings=((MESSAGES, history_binding(k)), (MESSAGES, history_batch_key(k))),
        )
        for k in range(shards)
    )
