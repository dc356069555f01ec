"""Which components a target runs: one table for the all-in-one mode, the scaled processes and
the Kubernetes manifests (each Deployment runs ``python -m services <target>``)."""

from __future__ import annotations

TARGETS: dict[str, tuple[str, ...]] = {
    "all": ("auth", "gateway", "history", "web"),  # make run: one process, SQLite, memory bus
    "auth": ("auth",),  # gunicorn workers (Flask)
    "gateway": ("gateway", "web"),  # uvicorn; also serves the static web client
    "history": ("history",),  # uvicorn: history writer + read API
    "migrate": (),  # alembic upgrade head, then exit
}

AUTH_PREFIXES = ("/api/auth", "/api/users", "/api/rooms")
