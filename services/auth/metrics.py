"""Prometheus metrics of the auth service (default registry, ``chat_auth_`` prefix)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

REQUESTS = Counter(
    "chat_auth_requests_total", "HTTP requests answered", ["method", "endpoint", "status"]
)
LATENCY = Histogram(
    "chat_auth_request_seconds",
    "HTTP request latency",
    ["endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
LOGINS = Counter("chat_auth_logins_total", "Login attempts by outcome", ["outcome"])
REGISTRATIONS = Counter("chat_auth_registrations_total", "Accounts created")
REGISTRATIONS_THROTTLED = Counter(
    "chat_auth_registrations_throttled_total", "Registrations refused by the per-address limit"
)
REFRESH_REUSE = Counter(
    "chat_auth_refresh_reuse_total", "Reused refresh tokens (their sessions were revoked)"
)
