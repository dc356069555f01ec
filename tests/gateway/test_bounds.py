"""Per-gateway structures stay bounded against a hostile client (unit level)."""

from __future__ import annotations

from services.gateway.lru import AckCache


def test_ack_cache_holds_its_byte_budget_under_huge_emoji_bodies() -> None:
    budget = 1_000_000
    cache = AckCache(budget)
    body = "\U0001f600" * 4000  # 4,000 emoji: 16 KB of UTF-8 each
    for i in range(5000):
        cache.put(("hostile", f"c{i}"), {"id": f"m{i}", "body": body})
        assert cache.bytes <= budget
    assert 0 < len(cache) < 5000
    real = sum(len(str(m["body"]).encode()) for m, _ in cache._data.values())
    assert real <= budget  # the estimate is an upper bound of what the bodies hold
    assert cache.get(("hostile", "c4999")) is not None  # the newest stay
    assert cache.get(("hostile", "c0")) is None  # the oldest went first
    cache.put(("hostile", "c4999"), {"id": "x", "body": "short"})  # a re-put is re-counted
    assert cache.bytes <= budget and cache.get(("hostile", "c4999")) == {"id": "x", "body": "short"}
