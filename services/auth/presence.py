"""Who of some usernames is online, for the auth service's member lists.

Presence lives in the gateways. The all-in-one process hands the auth app a function that asks
its own gateway; a scaled auth worker asks a gateway over HTTP (``CHAT_PRESENCE_URL``, e.g. the
gateways' Kubernetes Service), forwarding the caller's bearer token to ``GET /api/presence``.
When no gateway answers, members are reported offline (and the failure is logged): a member
list never fails because presence is away.
"""

from __future__ import annotations

import json
import logging
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence

log = logging.getLogger("chat.auth.presence")

# (usernames, the caller's bearer token) -> the online ones
PresenceLookup = Callable[[Sequence[str], str], set[str]]
MAX_PER_CALL = 1000  # GET /api/presence takes at most this many users


def nobody(names: Sequence[str], token: str) -> set[str]:
    return set()


def over_http(base_url: str, timeout: float = 2.0) -> PresenceLookup:
    def lookup(names: Sequence[str], token: str) -> set[str]:
        online: set[str] = set()
        for k in range(0, len(names), MAX_PER_CALL):
            part = names[k : k + MAX_PER_CALL]
            query = urllib.parse.urlencode({"users": ",".join(part)})
            req = urllib.request.Request(
                f"{base_url}/api/presence?{query}",
                headers={"Authorization": f"Bearer {token}"},
            )
            try:
                with urllib.request.urlopen(req, timeout=timeout) as resp:
                    body = json.loads(resp.read())
                online.update(str(n) for n in body.get("online", []))
            except Exception as exc:
                log.warning("presence lookup at %s failed: %s", base_url, exc)
                return online
        return online

    return lookup
