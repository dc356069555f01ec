"""The seeder lives in tools/seed.py (the benchmarks use it too)."""

from tools.seed import Seeded, SeededRoom, Seeder, password_hash

__all__ = ["Seeded", "SeededRoom", "Seeder", "password_hash"]
