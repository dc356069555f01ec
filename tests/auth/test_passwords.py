"""Password hashing parameters and policy."""

from __future__ import annotations

from argon2 import extract_parameters
from argon2.low_level import Type

from services.auth.passwords import (
    OWASP_MIN_MEMORY_KIB,
    OWASP_MIN_TIME_COST,
    Passwords,
    common_passwords,
    password_problem,
)
from services.common.settings import Settings, load_settings


def test_production_defaults_meet_owasp() -> None:
    """The one test at full cost: the defaults hash at or above OWASP's argon2id minimum."""
    defaults = Settings()
    assert defaults.argon2_memory_kib >= OWASP_MIN_MEMORY_KIB == 19 * 1024
    assert defaults.argon2_time_cost >= OWASP_MIN_TIME_COST == 2
    assert defaults.argon2_parallelism >= 1
    env_defaults = load_settings({"CHAT_JWT_SECRET": "s" * 40})  # no generated secret under var/
    assert env_defaults.argon2_memory_kib >= OWASP_MIN_MEMORY_KIB
    assert env_defaults.argon2_time_cost >= OWASP_MIN_TIME_COST
    passwords = Passwords(defaults)
    stored = passwords.hash("correct horse battery")
    params = extract_parameters(stored)
    assert params.type is Type.ID
    assert params.memory_cost >= OWASP_MIN_MEMORY_KIB
    assert params.time_cost >= OWASP_MIN_TIME_COST
    assert params.salt_len >= 16 and params.hash_len >= 32
    assert passwords.verify(stored, "correct horse battery")
    assert not passwords.verify(stored, "correct horse batterY")
    assert not passwords.needs_rehash(stored)


def test_needs_rehash_when_parameters_change() -> None:
    cheap = Passwords(Settings(argon2_time_cost=1, argon2_memory_kib=256))
    other = Passwords(Settings(argon2_time_cost=2, argon2_memory_kib=256))
    stored = cheap.hash("correct horse battery")
    assert not cheap.needs_rehash(stored)
    assert other.needs_rehash(stored)
    assert other.verify(stored, "correct horse battery")  # old hashes still verify
    assert other.needs_rehash("not a hash")
    assert not other.verify("not a hash", "x")


def test_common_password_list_is_shipped_and_sizable() -> None:
    common = common_passwords()
    assert 3000 <= len(common) <= 50_000
    assert all(8 <= len(p) <= 128 and p == p.lower() for p in common)
    for p in ("password", "12345678", "qwertyuiop", "iloveyou", "football", "p@ssw0rd"):
        assert p in common


def test_policy() -> None:
    assert password_problem("alice", "password1") is not None
    assert password_problem("alice", "PASSWORD1") is not None
    assert password_problem("alice", "alice123") is not None
    assert password_problem("alice", "ALICE1") is not None
    assert password_problem("alice", "correct horse battery") is None
    assert password_problem("alice", "alice's long passphrase") is None
