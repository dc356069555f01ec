from services.common.bus.base import (
    Bus,
    BusUnavailable,
    Delivery,
    Handler,
    PublishError,
    create_bus,
    topic_matches,
)

__all__ = [
    "Bus",
    "BusUnavailable",
    "Delivery",
    "Handler",
    "PublishError",
    "create_bus",
    "topic_matches",
]
