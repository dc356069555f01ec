"""Login sessions, refresh tokens (opaque, stored as SHA-256, rotated on every use) and
revocation. Plain SQLAlchemy: the caller owns the transaction and commits.

- A login starts a session (``sessions`` row, absolute lifetime ``refresh_ttl``) and issues an
  access JWT carrying the session id (``sid``) plus a refresh token.
- ``rotate`` marks the presented refresh token used (atomic compare-and-set, so two concurrent
  uses cannot both win) and issues a new pair. A token that was already used coming back means
  it was stolen or replayed: the whole session is revoked.
- ``revoke`` sets ``sessions.revoked_ms`` and stages ``session_revoked`` in the outbox in the same
  transaction; gateways and history add the sid to their local RevocationSet from the broker.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import false, select, update
from sqlalchemy.orm import Session as DbSession

from services.common import events
from services.common.ids import new_id
from services.common.models import RefreshToken, Session, User
from services.common.outbox import add_events
from services.common.settings import Settings
from services.common.tokens import issue_access

REFRESH_PREFIX = "rt_"
MAX_REFRESH_LEN = 128


class InvalidRefresh(Exception):
    """Unknown, used, expired or revoked refresh token (``reused`` if it had been used)."""

    def __init__(self, reused: bool = False) -> None:
        super().__init__("invalid refresh token")
        self.reused = reused


@dataclass(frozen=True)
class TokenPair:
    access_token: str
    expires_in: int
    refresh_token: str
    session_id: str

    def as_json(self) -> dict[str, Any]:
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "replace")).hexdigest()


def _new_refresh(db: DbSession, session_id: str, now_ms: int) -> str:
    token = REFRESH_PREFIX + secrets.token_urlsafe(32)
    db.add(RefreshToken(token_hash=token_hash(token), session_id=session_id, created_ms=now_ms))
    return token


def start_session(db: DbSession, settings: Settings, user: User, now_ms: int) -> TokenPair:
    sid = new_id(now_ms)
    db.add(
        Session(
            id=sid,
            user_id=user.id,
            created_ms=now_ms,
            expires_ms=now_ms + settings.refresh_ttl * 1000,
            revoked_ms=None,
        )
    )
    db.flush()
    refresh = _new_refresh(db, sid, now_ms)
    access, ttl = issue_access(settings, user.id, user.username, sid)
    return TokenPair(access, ttl, refresh, sid)


def rotate(db: DbSession, settings: Settings, token: object, now_ms: int) -> TokenPair:
    """Exchange a refresh token for a new pair. Raises InvalidRefresh (after staging the
    session's revocation if the token was a reused one: the caller must still commit)."""
    if not isinstance(token, str) or not token or len(token) > MAX_REFRESH_LEN:
        raise InvalidRefresh()
    digest = token_hash(token)
    claimed = db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == digest, RefreshToken.used == false())
        .values(used=True)
    )
    row = db.get(RefreshToken, digest)
    if row is None:
        raise InvalidRefresh()
    session = db.get(Session, row.session_id)
    if getattr(claimed, "rowcount", 0) != 1:
        if session is not None:
            revoke(db, settings, session, now_ms)
        raise InvalidRefresh(reused=True)
    if session is None or session.revoked_ms is not None or session.expires_ms <= now_ms:
        raise InvalidRefresh()
    user = db.get(User, session.user_id)
    if user is None:
        raise InvalidRefresh()
    refresh = _new_refresh(db, session.id, now_ms)
    access, ttl = issue_access(settings, user.id, user.username, session.id)
    return TokenPair(access, ttl, refresh, session.id)


def revoke(db: DbSession, settings: Settings, session: Session, now_ms: int) -> bool:
    """Revoke a session and stage the announcement. False if it was revoked already."""
    if session.revoked_ms is not None:
        return False
    session.revoked_ms = now_ms
    # No access token of this session outlives its ttl (+ verification leeway) from now.
    until = time.time() + settings.access_ttl + 60
    add_events(db, [events.session_revoked(session.id, session.user_id, until)])
    return True


def live_session(db: DbSession, sid: str, user_id: str, now_ms: int) -> Session | None:
    session = db.execute(select(Session).where(Session.id == sid)).scalar_one_or_none()
    if session is None or session.user_id != user_id:
        return None
    if session.revoked_ms is not None or session.expires_ms <= now_ms:
        return None
    return session
