"""Password hashing (argon2id, parameters from settings) and the password policy.

- Hashes are argon2id at the configured cost; production defaults meet OWASP's minimum
  (memory >= 19 MiB, time >= 2, parallelism 1). A login with a hash made at other parameters
  rehashes it transparently.
- ``verify_dummy`` spends the same work on a login for an unknown user, so the answer and its
  timing do not tell whether the account exists.
- Policy: 8-128 characters (validation.py), not one of the most common passwords
  (common_passwords.txt, shipped), not the username itself.
"""

from __future__ import annotations

import secrets
import threading
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from services.common.settings import Settings

COMMON_PASSWORDS_FILE = Path(__file__).with_name("common_passwords.txt")

# OWASP Password Storage Cheat Sheet, argon2id minimum configuration.
OWASP_MIN_MEMORY_KIB = 19 * 1024
OWASP_MIN_TIME_COST = 2


@cache
def common_passwords() -> frozenset[str]:
    lines = COMMON_PASSWORDS_FILE.read_text(encoding="utf-8").splitlines()
    return frozenset(line.strip().lower() for line in lines if line.strip() and line[0] != "#")


def password_problem(username: str, password: str) -> str | None:
    """Why this (length-checked) password is refused, or None if it is acceptable."""
    lowered = password.lower()
    if lowered in common_passwords():
        return "this password is too common; choose another"
    if lowered == username or (username in lowered and len(lowered) - len(username) < 4):
        return "the password must not be (close to) the username"
    return None


class Passwords:
    """argon2id hashing at the configured cost. Thread-safe."""

    def __init__(self, settings: Settings) -> None:
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            hash_len=32,
            salt_len=16,
            type=Type.ID,
        )
        self._dummy = self.hasher.hash(secrets.token_urlsafe(24))
        self._lock = threading.Lock()
        self.calls = 0  # hashes computed or verified: tests check throttling happens first

    def _count(self) -> None:
        with self._lock:
            self.calls += 1

    def hash(self, password: str) -> str:
        self._count()
        return self.hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        self._count()
        try:
            return self.hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def verify_dummy(self, password: str) -> None:
        """The same work as a real verification, for a user that does not exist."""
        self.verify(self._dummy, password)

    def needs_rehash(self, stored_hash: str) -> bool:
        try:
            return self.hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True
