"""The auth service's own bearer check: the JWT (signature, claims, type) and then the
session row, since auth has its database at hand (other services use their RevocationSet)."""

from __future__ import annotations

from flask import g, request

from services.auth.errors import unauthorized
from services.auth.extensions import db
from services.auth.sessions import live_session
from services.auth.state import state
from services.common.tokens import AccessClaims, TokenError, decode_access


def bearer_token() -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate() -> AccessClaims:
    """The caller's verified claims, or a 401 APIError."""
    cached = g.get("claims")
    if isinstance(cached, AccessClaims):
        return cached
    token = bearer_token()
    if token is None:
        raise unauthorized("unauthorized", "an Authorization: Bearer access token is required")
    st = state()
    try:
        claims = decode_access(st.settings, token)
    except TokenError:
        raise unauthorized("invalid_token", "the access token is invalid or expired") from None
    if live_session(db.session(), claims.sid, claims.user_id, st.clock()) is None:
        raise unauthorized("invalid_token", "the session of this token has ended")
    g.claims = claims
    return claims
