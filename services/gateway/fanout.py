"""Who hears of whose presence, and in how many frames.

A connection hears of its user's contacts (the members of its direct rooms and of groups of up
to ``CONTACT_ROOM_MAX`` members: ``Membership.watchers``) and of the users it asked for with
``presence_sub`` (at most ``MAX_SUB``, replaced by each new ``presence_sub``). Changes to one
connection within ``batch_seconds`` go out as one frame: the v1 form
``{"type":"presence","username","online"}`` for a single change, else
``{"type":"presence","changes":[{"username","online"}]}``. A change costs the number of its
watchers, never the size of the rooms the user is in.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from services.gateway.connection import Connection

if TYPE_CHECKING:
    from services.gateway.membership import Membership

MAX_SUB = 500


class PresenceFanout:
    def __init__(
        self, membership: Membership, is_online: Callable[[str], bool], batch_seconds: float
    ) -> None:
        self.membership = membership
        self.is_online = is_online
        self.batch_seconds = batch_seconds
        self.subs: dict[str, set[Connection]] = {}  # username -> connections subscribed
        self._pending: dict[Connection, dict[str, bool]] = {}
        self._timer: asyncio.TimerHandle | None = None

    # presence_sub ----------------------------------------------------------------------------
    def subscribe(self, conn: Connection, names: Iterable[str]) -> None:
        self.unsubscribe(conn)
        wanted = tuple(dict.fromkeys(names))[:MAX_SUB]
        conn.subs = wanted or None
        for name in wanted:
            self.subs.setdefault(name, set()).add(conn)
        pending = self._pending.get(conn)
        if pending:  # the answer below is newer for these names; others' changes still go
            for name in wanted:
                pending.pop(name, None)
        conn.send(
            {
                "type": "presence",
                "changes": [{"username": n, "online": self.is_online(n)} for n in wanted],
            }
        )

    def unsubscribe(self, conn: Connection) -> None:
        for name in conn.subs or ():
            watchers = self.subs.get(name)
            if watchers is not None:
                watchers.discard(conn)
                if not watchers:
                    del self.subs[name]
        conn.subs = None

    def forget(self, conn: Connection) -> None:
        self.unsubscribe(conn)
        self._pending.pop(conn, None)

    # changes ---------------------------------------------------------------------------------
    def changed(self, username: str, online: bool) -> None:
        """A user came online or went offline (anywhere): tell who watches them."""
        users = self.membership.users
        for uid in self.membership.watchers(username):
            us = users.get(uid)
            if us is None or us.username == username:
                continue
            for c in us.conns:
                self.tell(c, username, online)
        for c in self.subs.get(username, ()):
            self.tell(c, username, online)

    def tell(self, conn: Connection, username: str, online: bool) -> None:
        if conn.closed:
            return
        changes = self._pending.get(conn)
        if changes is None:
            changes = self._pending[conn] = {}
        changes[username] = online
        if self._timer is None:
            loop = asyncio.get_running_loop()
            if self.batch_seconds > 0:
                self._timer = loop.call_later(self.batch_seconds, self.flush)
            else:
                self._timer = loop.call_soon(self.flush)  # type: ignore[assignment]

    def flush(self) -> None:
        self._timer = None
        pending, self._pending = self._pending, {}
        for conn, changes in pending.items():
            if conn.closed:
                continue
            if len(changes) == 1:
                ((name, online),) = changes.items()
                conn.send({"type": "presence", "username": name, "online": online})
            else:
                conn.send(
                    {
                        "type": "presence",
                        "changes": [{"username": n, "online": o} for n, o in changes.items()],
                    }
                )
