"""What a running auth app holds besides the database: settings, hashing, throttle, relay."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import cast

from flask import current_app

from services.auth.extensions import db
from services.auth.passwords import Passwords
from services.auth.presence import PresenceLookup, nobody
from services.auth.relay_thread import BackgroundRelay
from services.auth.throttle import Limit, LoginThrottle
from services.common.outbox import OutboxRelay
from services.common.settings import Settings

EXTENSION = "chat_auth"


@dataclass
class AuthState:
    settings: Settings
    passwords: Passwords
    throttle: LoginThrottle
    register_limit: Limit  # registrations per client address
    search_limit: Limit  # user searches (GET /api/users?prefix=) per user
    clock: Callable[[], int]  # epoch milliseconds; tests inject their own
    relay: OutboxRelay | None = None  # given by the caller (all-in-one, tests)
    background: BackgroundRelay | None = field(default=None)  # started lazily, scaled mode
    presence: PresenceLookup = field(default=nobody)  # who of some usernames is online

    def active_relay(self) -> OutboxRelay | None:
        if self.relay is not None:
            return self.relay
        if self.background is not None:
            return self.background.ensure_started()
        return None


def state() -> AuthState:
    return cast(AuthState, current_app.extensions[EXTENSION])


def commit_and_publish(*, wait: bool = False) -> None:
    """Commit the request's transaction (its staged outbox events with it), then wake the
    relay; with ``wait``, until it has pushed them to the broker (or 2 s passed)."""
    db.session.commit()
    relay = state().active_relay()
    if relay is None:
        return
    if wait:
        relay.kick_and_wait(2.0)
    else:
        relay.kick()
