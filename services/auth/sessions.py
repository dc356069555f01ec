"""Login sessions, refresh tokens (opaque, stored as SHA-256, rotated on every use) and
revocation. Plain SQLAlchemy: the caller owns the transaction and commits.

- A login starts a session (``sessions`` row, absolute lifetime ``refresh_ttl``) and issues an
  access JWT carrying the session id (``sid``) plus a refresh token.
- ``rotate`` marks the presented refresh token used (atomic compare-and-set, so two concurrent
  uses cannot both win) and issues a new pair. A token that was already used coming back means
  it was stolen or replayed: the whole session is revoked. With a ``grace`` (the browser's
  session cookie, shared by its tabs, which may refresh at the same moment), a token presented
  again within ``grace`` of its exchange gets an access token of the same session and no new
  refresh token: the session does not fork, and the cookie jar keeps the winner's token.
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
    refresh_token: str | None  # None: an access token only (a refresh within the grace)
    session_id: str
    username: str = ""
    expires_ms: int = 0  # the session's absolute end

    def as_json(self) -> dict[str, Any]:
        """The bearer API's body: the refresh token travels in it."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "refresh_token": self.refresh_token,
        }

    def as_cookie_json(self) -> dict[str, Any]:
        """The browser session's body: the refresh token travels in the cookie only."""
        return {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "username": self.username,
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
    return TokenPair(access, ttl, refresh, sid, user.username, now_ms + settings.refresh_ttl * 1000)


def _usable(session: Session | None, now_ms: int) -> bool:
    return session is not None and session.revoked_ms is None and session.expires_ms > now_ms


def rotate(
    db: DbSession, settings: Settings, token: object, now_ms: int, *, grace_ms: int = 0
) -> TokenPair:
    """Exchange a refresh token for a new pair. Raises InvalidRefresh (after staging the
    session's revocation if the token was a reused one: the caller must still commit).

    ``grace_ms``: a token already exchanged at most this long ago gets an access token of the
    same session (``refresh_token`` None) instead of being treated as stolen."""
    if not isinstance(token, str) or not token or len(token) > MAX_REFRESH_LEN:
        raise InvalidRefresh()
    digest = token_hash(token)
    claimed = db.execute(
        update(RefreshToken)
        .where(RefreshToken.token_hash == digest, RefreshToken.used == false())
        .values(used=True, used_ms=now_ms)
    )
    # a locking read: the latest committed row, whatever this transaction's snapshot
    row = db.execute(
        select(RefreshToken)
        .where(RefreshToken.token_hash == digest)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).scalar_one_or_none()
    if row is None:
        raise InvalidRefresh()
    session = db.get(Session, row.session_id)
    if getattr(claimed, "rowcount", 0) != 1:
        # (now_ms may be before used_ms: this request read the clock, then waited for the
        # row lock while the winner exchanged the token)
        in_grace = row.used_ms is not None and now_ms - row.used_ms <= grace_ms
        if grace_ms > 0 and in_grace and _usable(session, now_ms):
            assert session is not None
            user = db.get(User, session.user_id)
            if user is None:
                raise InvalidRefresh()
            access, ttl = issue_access(settings, user.id, user.username, session.id)
            return TokenPair(access, ttl, None, session.id, user.username, session.expires_ms)
        if session is not None:
            revoke(db, settings, session, now_ms)
        raise InvalidRefresh(reused=True)
    if not _usable(session, now_ms):
        raise InvalidRefresh()
    assert session is not None
    user = db.get(User, session.user_id)
    if user is None:
        raise InvalidRefresh()
    refresh = _new_refresh(db, session.id, now_ms)
    access, ttl = issue_access(settings, user.id, user.username, session.id)
    return TokenPair(access, ttl, refresh, session.id, user.username, session.expires_ms)


def session_of_refresh(db: DbSession, token: object) -> Session | None:
    """The session a refresh token (used or not) belongs to; None for an unknown token."""
    if not isinstance(token, str) or not token or len(token) > MAX_REFRESH_LEN:
        return None
    row = db.get(RefreshToken, token_hash(token))
    return None if row is None else db.get(Session, row.session_id)


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
