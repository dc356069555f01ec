"""Login failure and registration limits kept in the database, so every worker and replica
shares them.

A login attempt is held to three limits (docs/SECURITY.md, "Brute-force limits"):

- per account (any address): ``login_fail_per_account_hour`` failures per rolling hour;
- per account from one address: ``login_fail_per_account_ip_minute`` per rolling minute;
- per address: at most ``login_fail_accounts_per_ip_hour`` DISTINCT accounts with a failure in
  the rolling hour (``DistinctLimit``). It counts accounts, not attempts: behind an office's one
  NAT address, one person's typos use up one slot, and a colleague's login still goes through;
  an address spraying guesses over many accounts is stopped.

Each limit is a sliding window made of ``slices`` fixed slices (``login_throttle`` rows
``"<kind>:<key>:<slice index>"``). An attempt first *reserves* a failure in the current slice
of each of its limits (one atomic upsert each), then reads the window's sum; over the limit, the
reservation is undone and the attempt refused with the time until enough slices age out. A
successful login releases its reservation. So the check happens before any password hashing,
concurrent attempts cannot overshoot, and no rolling window ever sees more failures than the
limit (the window read covers the limit's span plus the current slice).

Registrations use the same windows (``reserve`` with a ``"reg"`` limit per client address): every
registration that gets as far as hashing its password holds a slot, and none is released, so
one address cannot keep the workers hashing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.common.models import LoginThrottle as ThrottleRow


@dataclass(frozen=True)
class Limit:
    kind: str  # "user" | "addr" (login failures) | "reg" (registrations)
    max_failures: int
    window_ms: int
    slices: int = 10

    @property
    def slice_ms(self) -> int:
        return max(1, self.window_ms // self.slices)


@dataclass(frozen=True)
class DistinctLimit:
    """At most ``max_keys`` distinct members (accounts) per key (address) in a rolling window.

    One row per (key, member): ``"<kind>:<key>|<member>"``, ``expires_ms`` = the member's last
    failure + the window (exact sliding window). A key's members are one range of the primary
    key (``"<kind>:<key>|"`` to ``"<kind>:<key>}"``), read on the index."""

    kind: str
    max_keys: int
    window_ms: int

    def prefix(self, key: str) -> str:
        return f"{self.kind}:{key}|"

    def bucket(self, key: str, member: str) -> str:
        return self.prefix(key) + member


@dataclass(frozen=True)
class Reservation:
    """The failure slots an attempt holds: (bucket) per limit; ``marks``: the distinct-account
    rows a success forgets (the owner proved it was a typo)."""

    buckets: tuple[str, ...]
    marks: tuple[str, ...] = ()


def account_key(username: str) -> str:
    """Throttle key of the account an attempt names (valid usernames are at most 32 chars)."""
    if len(username) <= 32 and username.isascii() and username.isprintable():
        return username.lower()
    return "#" + hashlib.sha256(username.encode("utf-8", "replace")).hexdigest()[:32]


def address_key(addr: str | None) -> str:
    """Throttle key of a client address: IPv6 addresses count per /64 (one host's share)."""
    try:
        ip = ipaddress.ip_address(addr or "")
    except ValueError:
        return "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False).network_address) + "/64"
    return str(ip)


class LoginThrottle:
    def __init__(
        self, per_account: Limit, per_account_address: Limit, accounts_per_address: DistinctLimit
    ) -> None:
        self.per_account = per_account
        self.per_account_address = per_account_address
        self.accounts_per_address = accounts_per_address

    def reserve(
        self, session: Session, username: str, addr: str | None, now_ms: int
    ) -> Reservation | float:
        """Hold one failure slot per limit; or, over a limit, the seconds to wait. Commits."""
        account, address = account_key(username), address_key(addr)
        keyed = [
            (self.per_account, account),
            (self.per_account_address, f"{address}|{account}"),
        ]
        held = reserve(session, keyed, now_ms)
        if not isinstance(held, Reservation):
            return held
        limit = self.accounts_per_address
        wait = reserve_distinct(session, limit, address, account, now_ms)
        if wait > 0:
            _release(session, held.buckets)
            session.commit()
            return wait
        return Reservation(held.buckets, (limit.bucket(address, account),))

    def release(self, session: Session, reservation: Reservation) -> None:
        """The attempt succeeded: it was not a failure after all. Does not commit."""
        _release(session, reservation.buckets)
        if reservation.marks:
            session.execute(delete(ThrottleRow).where(ThrottleRow.bucket.in_(reservation.marks)))


def reserve_distinct(
    session: Session, limit: DistinctLimit, key: str, member: str, now_ms: int
) -> float:
    """Mark ``member`` as failed from ``key`` (for the window, from now); 0 if that is within
    the limit, else the seconds until enough other members age out (and no mark is kept).
    A member already marked is always within it (its failures are the other limits' business).
    Race-free like ``reserve``: the mark is committed before the others are counted. Commits."""
    bucket = limit.bucket(key, member)
    before = session.execute(
        select(ThrottleRow.expires_ms).where(ThrottleRow.bucket == bucket)
    ).scalar_one_or_none()
    _increment(session, bucket, now_ms + limit.window_ms, refresh_expiry=True)
    session.commit()
    if before is not None and before > now_ms:
        return 0.0
    prefix = limit.prefix(key)
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)  # the first string past every "<prefix>..."
    others = sorted(
        session.execute(
            select(ThrottleRow.expires_ms).where(
                ThrottleRow.bucket >= prefix,
                ThrottleRow.bucket < upper,
                ThrottleRow.bucket != bucket,
                ThrottleRow.expires_ms > now_ms,
            )
        ).scalars()
    )
    if len(others) < limit.max_keys:
        return 0.0
    session.execute(delete(ThrottleRow).where(ThrottleRow.bucket == bucket))
    session.commit()
    # enough of the others must age out that fewer than max_keys remain
    free_at = others[len(others) - limit.max_keys]
    return max(1.0, math.ceil((free_at - now_ms) / 1000))


def reserve(
    session: Session, keyed: Sequence[tuple[Limit, str]], now_ms: int
) -> Reservation | float:
    """One slot in each (limit, key); or, over any of them, the seconds to wait (and no
    slot is kept). Commits."""
    buckets: list[str] = []
    for limit, key in keyed:
        bucket = _bucket(limit, key, now_ms // limit.slice_ms)
        _increment(session, bucket, _expiry(limit, now_ms))
        buckets.append(bucket)
    session.commit()
    wait = 0.0
    for limit, key in keyed:
        wait = max(wait, _retry_after(session, limit, key, now_ms))
    if wait > 0:
        _release(session, buckets)
        session.commit()
        return wait
    if random.random() < 0.01:
        session.execute(delete(ThrottleRow).where(ThrottleRow.expires_ms < now_ms))
        session.commit()
    return Reservation(tuple(buckets))


def _bucket(limit: Limit, key: str, index: int) -> str:
    return f"{limit.kind}:{key}:{index}"


def _expiry(limit: Limit, now_ms: int) -> int:
    index = now_ms // limit.slice_ms
    return (index + limit.slices + 1) * limit.slice_ms


def _increment(
    session: Session, bucket: str, expires_ms: int, *, refresh_expiry: bool = False
) -> None:
    """``failures + 1`` in the bucket (created if missing); ``refresh_expiry``: an existing
    bucket's expiry moves to ``expires_ms`` too."""
    dialect = session.get_bind().dialect.name
    bump: dict[str, Any] = {"failures": ThrottleRow.failures + 1}
    if refresh_expiry:
        bump["expires_ms"] = expires_ms
    if dialect in ("mysql", "mariadb"):
        ins = mysql_insert(ThrottleRow).values(bucket=bucket, failures=1, expires_ms=expires_ms)
        mysql_bump = {**bump, "failures": ins.table.c.failures + 1}
        session.execute(ins.on_duplicate_key_update(**mysql_bump))
        return
    if dialect == "sqlite":
        lite = sqlite_insert(ThrottleRow).values(bucket=bucket, failures=1, expires_ms=expires_ms)
        session.execute(lite.on_conflict_do_update(index_elements=["bucket"], set_=bump))
        return
    bumped = session.execute(  # any other database: update, else insert, else update again
        update(ThrottleRow).where(ThrottleRow.bucket == bucket).values(**bump)
    )
    if getattr(bumped, "rowcount", 0) == 0:
        try:
            with session.begin_nested():
                session.add(ThrottleRow(bucket=bucket, failures=1, expires_ms=expires_ms))
        except IntegrityError:
            _increment(session, bucket, expires_ms, refresh_expiry=refresh_expiry)


def _release(session: Session, buckets: Sequence[str]) -> None:
    for bucket in buckets:
        session.execute(
            update(ThrottleRow)
            .where(ThrottleRow.bucket == bucket, ThrottleRow.failures > 0)
            .values(failures=ThrottleRow.failures - 1)
        )


def _retry_after(session: Session, limit: Limit, key: str, now_ms: int) -> float:
    """0 if the window (own reservation included) is within the limit, else seconds to wait."""
    current = now_ms // limit.slice_ms
    indexes = range(current - limit.slices, current + 1)
    rows = session.execute(
        select(ThrottleRow.bucket, ThrottleRow.failures).where(
            ThrottleRow.bucket.in_([_bucket(limit, key, i) for i in indexes])
        )
    ).all()
    counts = {int(bucket.rsplit(":", 1)[1]): failures for bucket, failures in rows}
    total = sum(counts.values())
    if total <= limit.max_failures:
        return 0.0
    # Without this attempt, the window holds total - 1; it may take one more once the
    # oldest slices have aged out far enough that fewer than max_failures remain.
    remaining = total - 1
    for index in indexes:
        remaining -= counts.get(index, 0)
        if remaining < limit.max_failures:
            free_at = (index + limit.slices + 1) * limit.slice_ms
            return max(1.0, math.ceil((free_at - now_ms) / 1000))
    return math.ceil(limit.window_ms / 1000)  # unreachable: the last slice holds our own slot
