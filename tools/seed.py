"""Users, sessions and group rooms written straight into a cluster's database, with access tokens
minted with the cluster's secret: hundreds of users in a second instead of two password hashes
each through the auth service (whose own paths are tested in tests/auth and test_tokens.py).

Every seeded user has a real session row and a real argon2 hash of ``PASSWORD``, so the tokens
work on every service (auth checks the session row) and a login works too.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import insert
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.common.ids import new_id, now_ms
from services.common.models import Membership, Room, Session, User
from services.common.settings import Settings
from services.common.tokens import issue_access

PASSWORD = "correct horse battery staple"  # every seeded user's (and every test user's)


def uname(prefix: str = "u") -> str:
    return f"{prefix}{secrets.token_hex(4)}"


_HASH: str | None = None


def password_hash() -> str:
    global _HASH
    if _HASH is None:
        _HASH = PasswordHasher(time_cost=2, memory_cost=19456, parallelism=1).hash(PASSWORD)
    return _HASH


@dataclass
class Seeded:
    id: str
    username: str
    sid: str
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class SeededRoom:
    id: str
    members: list[Seeded] = field(default_factory=list)


class Seeder:
    def __init__(self, database_url: str, secret: str) -> None:
        self.engine: Engine = make_engine(database_url)
        self.settings = Settings(jwt_secret=secret, access_ttl=3 * 3600)

    def close(self) -> None:
        self.engine.dispose()

    def users(self, n: int, prefix: str = "f") -> list[Seeded]:
        now = now_ms()
        out: list[Seeded] = []
        user_rows: list[dict[str, Any]] = []
        session_rows: list[dict[str, Any]] = []
        for _ in range(n):
            uid, sid, name = new_id(), new_id(), uname(prefix)
            token, _ = issue_access(self.settings, uid, name, sid)
            out.append(Seeded(uid, name, sid, token))
            user_rows.append(
                {"id": uid, "username": name, "password_hash": password_hash(), "created_ms": now}
            )
            session_rows.append(
                {
                    "id": sid,
                    "user_id": uid,
                    "created_ms": now,
                    "expires_ms": now + 86_400_000,
                    "revoked_ms": None,
                }
            )
        with self.engine.begin() as conn:
            conn.execute(insert(User), user_rows)
            conn.execute(insert(Session), session_rows)
        return out

    def rooms(self, groups: list[list[Seeded]], name: str = "load") -> list[SeededRoom]:
        """One group room per list of members (the first is the owner)."""
        now = now_ms()
        rooms: list[SeededRoom] = []
        room_rows: list[dict[str, Any]] = []
        member_rows: list[dict[str, Any]] = []
        for members in groups:
            rid = new_id()
            rooms.append(SeededRoom(rid, list(members)))
            room_rows.append(
                {
                    "id": rid,
                    "kind": "group",
                    "name": name,
                    "owner_id": members[0].id,
                    "direct_key": None,
                    "created_ms": now,
                    "last_activity_ms": now,
                    "version": 1,
                    "member_count": len(members),
                }
            )
            member_rows += [
                {"room_id": rid, "user_id": m.id, "username": m.username, "joined_ms": now}
                for m in members
            ]
        with self.engine.begin() as conn:
            conn.execute(insert(Room), room_rows)
            for k in range(0, len(member_rows), 2000):
                conn.execute(insert(Membership), member_rows[k : k + 2000])
        return rooms
