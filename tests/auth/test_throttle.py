"""Brute-force limits: per account (<= 100 failures an hour), per account from one address
(bursts), and per client address in DISTINCT accounts failed (an office behind one NAT address
is not locked out by one person's typos), kept in the database, checked before any hashing,
with Retry-After and expiry."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from flask import Flask

from services.auth import create_app
from services.auth.extensions import db
from services.auth.throttle import DistinctLimit, Limit, address_key, reserve_distinct
from services.common.settings import Settings
from tests.auth.conftest import PASSWORD, Api, FakeClock, Relay, auth_state, dispose, error_code

ACCOUNT_LIMIT = 5
PAIR_LIMIT = 4  # failures for one account from one address per minute
ADDRESS_ACCOUNTS = 8  # distinct accounts failed from one address per hour


@pytest.fixture
def strict_app(settings: Settings, relay: Relay, clock: FakeClock) -> Iterator[Flask]:
    tight = replace(
        settings,
        login_fail_per_account_hour=ACCOUNT_LIMIT,
        login_fail_per_account_ip_minute=PAIR_LIMIT,
        login_fail_accounts_per_ip_hour=ADDRESS_ACCOUNTS,
    )
    app = create_app(tight, relay=relay.background.ensure_started(), clock=clock)
    yield app
    dispose(app)


def from_addr(addr: str) -> dict[str, object]:
    return {"environ_base": {"REMOTE_ADDR": addr}}


def test_production_limits_meet_asvs() -> None:
    defaults = Settings()
    assert 0 < defaults.login_fail_per_account_hour <= 100  # ASVS 2.2.1
    assert 0 < defaults.login_fail_per_account_ip_minute
    # an office behind one NAT address: well above one person's typos
    assert defaults.login_fail_accounts_per_ip_hour >= 20


def test_account_lockout_and_its_expiry(strict_app: Flask, clock: FakeClock) -> None:
    api = Api(strict_app)
    api.register("alice")
    for i in range(ACCOUNT_LIMIT):  # from different addresses: only the account limit applies
        r = api.login("alice", "wrong password", **from_addr(f"10.0.0.{i + 1}"))
        assert r.status_code == 401
    passwords = auth_state(strict_app).passwords
    before = passwords.calls
    locked = api.login("alice", PASSWORD, **from_addr("10.0.1.1"))  # even the right password
    assert locked.status_code == 429
    assert error_code(locked) == "rate_limited"
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= 3600 + 360
    assert passwords.calls == before  # refused before any hashing
    # A little later: still locked; other accounts are not.
    clock.advance(1800)
    assert api.login("alice", PASSWORD, **from_addr("10.0.1.2")).status_code == 429
    api.register("bob")
    assert api.login("bob", PASSWORD, **from_addr("10.0.1.3")).status_code == 200
    # Once the window has passed, the account works again.
    clock.advance(retry_after - 1800 + 1)
    assert api.login("alice", PASSWORD, **from_addr("10.0.1.4")).status_code == 200


def test_no_rolling_hour_sees_more_than_the_limit(strict_app: Flask, clock: FakeClock) -> None:
    """Failures at the end of one hour and the start of the next still count together."""
    api = Api(strict_app)
    api.register("alice")
    clock.now = (clock.now // 3_600_000 + 1) * 3_600_000 - 60_000  # a minute before the hour
    for i in range(ACCOUNT_LIMIT):
        assert api.login("alice", "wrong password", **from_addr(f"10.0.2.{i}")).status_code == 401
    clock.advance(120)  # the next fixed hour has begun
    r = api.login("alice", "wrong password", **from_addr("10.0.2.99"))
    assert r.status_code == 429


def test_unknown_accounts_are_limited_too(strict_app: Flask) -> None:
    api = Api(strict_app)
    for i in range(ACCOUNT_LIMIT):
        assert api.login("ghost", "wrong password", **from_addr(f"10.0.3.{i}")).status_code == 401
    assert api.login("ghost", "wrong password", **from_addr("10.0.3.99")).status_code == 429


def test_distinct_accounts_per_address(strict_app: Flask, clock: FakeClock) -> None:
    """An address with failures on ADDRESS_ACCOUNTS accounts may not try a new one (an address
    spraying guesses over many accounts), before any hashing; the accounts it already tried
    are not refused by this limit, other addresses are unaffected, and it ages out."""
    api = Api(strict_app)
    api.register("alice")
    api.register("bob")
    passwords = auth_state(strict_app).passwords
    here = from_addr("192.0.2.7")
    assert api.login("bob", "wrong password", **here).status_code == 401
    for i in range(ADDRESS_ACCOUNTS - 1):  # many accounts, one address (bob is one of them)
        clock.advance(60)
        assert api.login(f"user{i}", "wrong password", **here).status_code == 401
    before = passwords.calls
    r = api.login("alice", PASSWORD, **here)
    assert r.status_code == 429
    assert error_code(r) == "rate_limited"
    retry_after = int(r.headers["Retry-After"])
    # bob's failure (the oldest) ages out first: an hour after it, a little less from now
    assert 3600 - 60 * ADDRESS_ACCOUNTS <= retry_after <= 3600
    assert passwords.calls == before
    # an account already counted may still be tried (its own limits apply): bob logs in
    assert api.login("bob", PASSWORD, **here).status_code == 200
    # another address is unaffected
    assert api.login("alice", PASSWORD, **from_addr("192.0.2.8")).status_code == 200
    # bob's success forgot his failure: one slot is free again, alice gets it
    assert api.login("alice", PASSWORD, **here).status_code == 200
    clock.advance(retry_after)
    assert api.login("carol-new", "wrong password", **here).status_code == 401


def test_one_colleague_mistyping_never_locks_out_another(
    strict_app: Flask, clock: FakeClock
) -> None:
    """Issue 16: two accounts behind one address; one mistypes 20+ times (locking only their
    own account from there), the other logs in at once, every time."""
    api = Api(strict_app)
    api.register("alice")
    api.register("bob")
    office = from_addr("198.51.100.20")
    statuses = [api.login("alice", f"typo {i}", **office).status_code for i in range(25)]
    assert statuses[:PAIR_LIMIT] == [401] * PAIR_LIMIT
    assert set(statuses[PAIR_LIMIT:]) == {429}  # alice, from here: her own problem
    for _ in range(3):
        assert api.login("bob", PASSWORD, **office).status_code == 200
    # alice herself: from another address at once, from the office once the burst passed
    assert api.login("alice", PASSWORD, **from_addr("198.51.100.21")).status_code == 200
    clock.advance(70)
    assert api.login("alice", PASSWORD, **office).status_code == 200


def test_account_burst_from_one_address(strict_app: Flask, clock: FakeClock) -> None:
    api = Api(strict_app)
    api.register("alice")
    here = from_addr("192.0.2.9")
    for i in range(PAIR_LIMIT):
        assert api.login("alice", f"wrong {i}", **here).status_code == 401
    r = api.login("alice", PASSWORD, **here)
    assert r.status_code == 429
    assert 0 < int(r.headers["Retry-After"]) <= 66
    clock.advance(int(r.headers["Retry-After"]))
    assert api.login("alice", PASSWORD, **here).status_code == 200


def test_distinct_limit_never_overshoots(strict_app: Flask, clock: FakeClock) -> None:
    """The distinct-accounts check counts after its mark is committed: at most the limit of
    new accounts pass, whatever the interleaving (here: marks from 'other workers' that
    land between a check's mark and its count)."""
    limit = DistinctLimit("accts", 3, 3_600_000)
    with strict_app.app_context():
        session = db.session()
        passed = [
            reserve_distinct(session, limit, "203.0.113.5", f"acct{i}", clock()) for i in range(6)
        ]
        assert [w == 0 for w in passed] == [True, True, True, False, False, False]
        # an account already counted passes; another key is separate
        assert reserve_distinct(session, limit, "203.0.113.5", "acct1", clock()) == 0
        assert reserve_distinct(session, limit, "203.0.113.6", "acct9", clock()) == 0
        # a refused mark was not kept: after the window, exactly the three age out
        clock.advance(3601)
        assert reserve_distinct(session, limit, "203.0.113.5", "acct4", clock()) == 0


def test_successful_logins_do_not_count(strict_app: Flask) -> None:
    api = Api(strict_app)
    api.register("alice")
    for _ in range(ACCOUNT_LIMIT * 3):
        assert api.login("alice", **from_addr("10.0.4.1")).status_code == 200


def test_rate_limit_is_checked_before_hashing(strict_app: Flask) -> None:
    """Every refused attempt costs no argon2 work at all (counted, not timed)."""
    api = Api(strict_app)
    api.register("alice")
    passwords = auth_state(strict_app).passwords
    for i in range(ACCOUNT_LIMIT):
        api.login("alice", "wrong password", **from_addr(f"10.0.5.{i}"))
    before = passwords.calls
    for i in range(20):
        assert api.login("alice", "wrong password", **from_addr(f"10.0.6.{i}")).status_code == 429
    assert passwords.calls == before


def test_ipv6_addresses_count_per_64() -> None:
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("not an address") == "unknown"


def test_limit_slices() -> None:
    limit = Limit("user", 100, 3_600_000)
    assert limit.slice_ms * limit.slices == limit.window_ms


REGISTER_LIMIT = 3


def test_registrations_are_limited_per_address_before_hashing(
    settings: Settings, relay: Relay, clock: FakeClock
) -> None:
    """One address cannot keep the workers hashing passwords by registering accounts."""
    app = create_app(
        replace(settings, register_per_ip_hour=REGISTER_LIMIT),
        relay=relay.background.ensure_started(),
        clock=clock,
    )
    try:
        api = Api(app)
        here = from_addr("10.9.0.1")
        for i in range(REGISTER_LIMIT):
            r = api.client.post("/api/auth/register", json=_creds(f"reg{i}"), **here)
            assert r.status_code == 201, r.get_json()
        passwords = auth_state(app).passwords
        before = passwords.calls
        refused = api.client.post("/api/auth/register", json=_creds("reg-over"), **here)
        assert refused.status_code == 429
        assert error_code(refused) == "rate_limited"
        retry_after = int(refused.headers["Retry-After"])
        assert 0 < retry_after <= 3600 + 360
        assert passwords.calls == before  # refused before any hashing
        # nothing was created, and the name is still free for a later try
        assert api.login("reg-over").status_code == 401
        # bad requests and taken names do not use up the limit (they never hash) ...
        taken = api.client.post("/api/auth/register", json=_creds("reg0"), **here)
        assert taken.status_code == 409
        # ... another address is not affected, and the window ages out
        there = from_addr("10.9.0.2")
        assert (
            api.client.post("/api/auth/register", json=_creds("reg-b"), **there).status_code == 201
        )
        clock.advance(retry_after + 1)
        assert (
            api.client.post("/api/auth/register", json=_creds("reg-over"), **here).status_code
            == 201
        )
        assert api.login("reg-over").status_code == 200
    finally:
        dispose(app)


def test_registration_limit_default_is_set() -> None:
    assert 0 < Settings().register_per_ip_hour <= 100


def _creds(name: str) -> dict[str, str]:
    return {"username": name, "password": PASSWORD}
