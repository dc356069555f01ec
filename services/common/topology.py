"""Every exchange, queue and routing key in one place (docs/ARCHITECTURE.md lists them).

All services declare the durable part of the topology on connect with identical arguments
(RabbitMQ refuses a redeclaration with other arguments), so a publish is never unroutable
because the history queue does not exist yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MESSAGES = "chat.messages"  # topic: room.<room_id>.msg, .typing, .member
EVENTS = "chat.events"  # topic: user.<user_id>, session.revoked, gw.<gateway_id>
PRESENCE = "chat.presence"  # fanout: gateway presence announcements and heartbeats
DEAD = "chat.dead"  # fanout: poison messages from the history queue

HISTORY_QUEUE = "chat.history"  # quorum, single active consumer, delivery limit -> DEAD
DEAD_QUEUE = "chat.history.dead"

HISTORY_BINDING = "room.*.msg"


def room_msg_key(room_id: str) -> str:
    return f"room.{room_id}.msg"


def room_typing_key(room_id: str) -> str:
    return f"room.{room_id}.typing"


def room_member_key(room_id: str) -> str:
    """Membership and settings changes of a room (gateways only; not history)."""
    return f"room.{room_id}.member"


def room_binding(room_id: str) -> str:
    """What a gateway binds for a room it has members of: messages, typing, member events."""
    return f"room.{room_id}.*"


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
    )


def durable_queues(delivery_limit: int) -> tuple[QueueSpec, ...]:
    return (
        QueueSpec(
            HISTORY_QUEUE,
            arguments={
                "x-queue-type": "quorum",
                "x-single-active-consumer": True,
                "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": DEAD,
            },
            bindings=((MESSAGES, HISTORY_BINDING),),
        ),
        QueueSpec(DEAD_QUEUE, arguments={"x-queue-type": "quorum"}, bindings=((DEAD, ""),)),
    )
