"""Access tokens (RFC 8725): HS256 pinned, iss/aud/exp/iat/nbf/jti, a type and a session id.

Verification is local everywhere: the signature and claims, then the process's revocation set
(filled at start from the database and kept live by ``session.revoked`` events on the bus).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import jwt

from services.common.ids import new_id
from services.common.settings import Settings

ALGORITHM = "HS256"
ACCESS_TYPE = "access"


class TokenError(Exception):
    """The token is malformed, forged, expired, of the wrong kind, or revoked."""


@dataclass(frozen=True)
class AccessClaims:
    user_id: str
    username: str
    sid: str
    exp: int
    jti: str


def issue_access(settings: Settings, user_id: str, username: str, sid: str) -> tuple[str, int]:
    now = int(time.time())
    payload = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": user_id,
        "name": username,
        "sid": sid,
        "typ": ACCESS_TYPE,
        "iat": now,
        "nbf": now,
        "exp": now + settings.access_ttl,
        "jti": new_id(),
    }
    token = jwt.encode(payload, settings.jwt_secret, algorithm=ALGORITHM, headers={"typ": "at+jwt"})
    return token, settings.access_ttl


def decode_access(settings: Settings, token: object) -> AccessClaims:
    """Check signature and claims (not revocation). Raises TokenError."""
    if not isinstance(token, str) or not token or len(token) > 4096:
        raise TokenError("missing or malformed token")
    try:
        header = jwt.get_unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise TokenError("unexpected algorithm")
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=[ALGORITHM],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "nbf", "iss", "aud", "sub", "sid", "jti", "typ"]},
            leeway=5,
        )
    except jwt.PyJWTError as exc:
        raise TokenError(str(exc)) from exc
    if claims.get("typ") != ACCESS_TYPE:
        raise TokenError("not an access token")
    fields = (claims.get("sub"), claims.get("name"), claims.get("sid"), claims.get("jti"))
    if not all(isinstance(f, str) and f for f in fields):
        raise TokenError("malformed claims")
    return AccessClaims(
        user_id=claims["sub"],
        username=claims["name"],
        sid=claims["sid"],
        exp=int(claims["exp"]),
        jti=claims["jti"],
    )


class RevocationSet:
    """Revoked session ids, kept until the last access token of the session has expired."""

    def __init__(self) -> None:
        self._revoked: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, sid: str, until: float) -> None:
        with self._lock:
            self._revoked[sid] = max(until, self._revoked.get(sid, 0.0))
            if len(self._revoked) > 10_000:
                self._prune()

    def __contains__(self, sid: object) -> bool:
        return sid in self._revoked

    def __len__(self) -> int:
        return len(self._revoked)

    def _prune(self) -> None:
        now = time.time()
        for sid in [s for s, t in self._revoked.items() if t < now]:
            del self._revoked[sid]


def verify_access(settings: Settings, token: object, revoked: RevocationSet) -> AccessClaims:
    claims = decode_access(settings, token)
    if claims.sid in revoked:
        raise TokenError("session revoked")
    return claims
