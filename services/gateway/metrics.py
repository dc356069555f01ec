"""Gateway metrics (module level: one set per process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CONNECTIONS = Gauge("chat_gateway_connections", "Open authenticated WebSocket connections")
ACCEPTED = Counter("chat_gateway_messages_accepted_total", "Messages acked to their sender")
CHANGES = Counter(
    "chat_gateway_changes_accepted_total", "Edits and deletes acked to their author", ["kind"]
)
DELIVERED = Counter("chat_gateway_frames_delivered_total", "Message frames queued to sockets")
ERRORS = Counter("chat_gateway_errors_total", "Error frames sent", ["code"])
CLOSED = Counter("chat_gateway_closes_total", "Connections closed by the gateway", ["code"])
SEND_SECONDS = Histogram(
    "chat_gateway_send_seconds",
    "From a send frame to its ack (includes the broker confirm)",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
ACK_CACHE_BYTES = Gauge("chat_gateway_ack_cache_bytes", "Estimated bytes held by the ack cache")
BINDINGS = Gauge("chat_gateway_bindings", "Bindings of the gateway's queue")
LOCAL_ROOMS = Gauge("chat_gateway_rooms", "Rooms with a member connected here")
LOCAL_USERS = Gauge("chat_gateway_users", "Users with a connection here")
