"""One typed settings object, read once from the environment.

Nothing else in the codebase reads ``os.environ``. The all-in-one mode (memory bus, SQLite)
may invent a development secret; the scaled mode refuses to start without real ones.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

PLACEHOLDER_SECRETS = {"", "changeme", "change-me", "secret", "dev", "development"}
ROOT = Path(__file__).resolve().parents[2]


class SettingsError(RuntimeError):
    """A setting is missing or unsafe; the process must not start."""


def _int(env: Mapping[str, str], key: str, default: int) -> int:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be an integer, got {raw!r}") from exc


def _float(env: Mapping[str, str], key: str, default: float) -> float:
    raw = env.get(key)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise SettingsError(f"{key} must be a number, got {raw!r}") from exc


def _list(env: Mapping[str, str], key: str) -> tuple[str, ...]:
    raw = env.get(key, "")
    return tuple(part.strip() for part in raw.split(",") if part.strip())


@dataclass(frozen=True)
class Settings:
    # what runs and where
    target: str = "all"  # all | auth | gateway | history | migrate
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str = f"sqlite:///{ROOT / 'var' / 'chat.db'}"
    broker_url: str = "memory://"
    web_dir: str = str(ROOT / "web")
    log_level: str = "INFO"
    log_json: bool = True

    # tokens
    jwt_secret: str = ""
    jwt_issuer: str = "chat"
    jwt_audience: str = "chat"
    access_ttl: int = 900  # seconds
    refresh_ttl: int = 30 * 24 * 3600

    # passwords and brute force
    argon2_time_cost: int = 3
    argon2_memory_kib: int = 19 * 1024
    argon2_parallelism: int = 1
    login_fail_per_account_hour: int = 100
    login_fail_per_account_ip_minute: int = 20  # failures for one account from one address
    # distinct accounts with a failed login from one client address per rolling hour (an
    # office behind one NAT address: one person's typos never lock out a colleague)
    login_fail_accounts_per_ip_hour: int = 30
    register_per_ip_hour: int = 30  # registrations per client address per rolling hour
    # how many proxies in front of auth append to X-Forwarded-For (nginx / the Ingress: 1);
    # -1 = 1 in the scaled mode, 0 all-in-one (no proxy in front)
    trusted_proxy_hops: int = -1
    auth_workers: int = 0  # gunicorn workers; 0 = from the CPU count (2..4)
    # peers (addresses or networks) whose X-Forwarded-For / X-Forwarded-Proto the uvicorn
    # servers (all-in-one, gateway, history) believe; empty: no header is believed
    forwarded_allow_ips: tuple[str, ...] = ()
    # a refresh token presented again this many seconds after its rotation (browser tabs
    # refreshing at once through the session cookie) still gets an access token
    refresh_reuse_grace: float = 10.0
    user_search_per_minute: int = 30  # GET /api/users?prefix= per user per rolling minute

    # gateway
    gateway_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    allowed_origins: tuple[str, ...] = ()
    max_frame_bytes: int = 64 * 1024
    auth_timeout: float = 10.0
    send_rate_per_sec: float = 20.0
    send_burst: int = 40
    rate_strikes_before_close: int = 20
    ws_ping_interval: float = 20.0
    ws_ping_timeout: float = 20.0
    send_queue_max: int = 1000
    presence_heartbeat: float = 5.0
    presence_timeout: float = 15.0
    shutdown_grace: float = 5.0
    ack_cache_bytes: int = 32 * 1024 * 1024  # acks kept for retries, by size (not by count)
    presence_batch_ms: int = 50  # presence changes to one socket within this go in one frame

    # rooms
    max_group_members: int = 10_000
    # where the auth service asks who is online (GET /api/presence on a gateway); empty: the
    # all-in-one process asks its own gateway, a scaled auth without it reports nobody online
    presence_url: str = ""

    # history
    # N shards of the history queue; 0 = 1 all-in-one, 4 scaled. Only the first process of a
    # new database uses it: from then on the database holds the count (python -m services reshard)
    history_shards: int = 0
    history_batch_size: int = 200
    history_batch_ms: int = 20
    history_delivery_limit: int = 5

    # which environment: "development" allows generated secrets
    environment: str = "development"

    @property
    def scaled(self) -> bool:
        return not self.broker_url.startswith("memory:") or not self.database_url.startswith(
            "sqlite"
        )


def _dev_secret() -> str:
    path = ROOT / "var" / "jwt-secret"
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    path.write_text(value)
    path.chmod(0o600)
    return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    defaults = Settings()
    s = Settings(
        target=env.get("CHAT_TARGET", defaults.target),
        host=env.get("CHAT_HOST", defaults.host),
        port=_int(env, "CHAT_PORT", defaults.port),
        database_url=env.get("CHAT_DATABASE_URL", defaults.database_url),
        broker_url=env.get("CHAT_BROKER_URL", defaults.broker_url),
        web_dir=env.get("CHAT_WEB_DIR", defaults.web_dir),
        log_level=env.get("CHAT_LOG_LEVEL", defaults.log_level).upper(),
        log_json=env.get("CHAT_LOG_JSON", "1") not in ("0", "false", "no"),
        jwt_secret=env.get("CHAT_JWT_SECRET", ""),
        jwt_issuer=env.get("CHAT_JWT_ISSUER", defaults.jwt_issuer),
        jwt_audience=env.get("CHAT_JWT_AUDIENCE", defaults.jwt_audience),
        access_ttl=_int(env, "CHAT_ACCESS_TTL", defaults.access_ttl),
        refresh_ttl=_int(env, "CHAT_REFRESH_TTL", defaults.refresh_ttl),
        argon2_time_cost=_int(env, "CHAT_ARGON2_TIME_COST", defaults.argon2_time_cost),
        argon2_memory_kib=_int(env, "CHAT_ARGON2_MEMORY_KIB", defaults.argon2_memory_kib),
        argon2_parallelism=_int(env, "CHAT_ARGON2_PARALLELISM", defaults.argon2_parallelism),
        login_fail_per_account_hour=_int(
            env, "CHAT_LOGIN_FAIL_PER_ACCOUNT_HOUR", defaults.login_fail_per_account_hour
        ),
        login_fail_per_account_ip_minute=_int(
            env,
            "CHAT_LOGIN_FAIL_PER_ACCOUNT_IP_MINUTE",
            defaults.login_fail_per_account_ip_minute,
        ),
        login_fail_accounts_per_ip_hour=_int(
            env, "CHAT_LOGIN_FAIL_ACCOUNTS_PER_IP_HOUR", defaults.login_fail_accounts_per_ip_hour
        ),
        register_per_ip_hour=_int(env, "CHAT_REGISTER_PER_IP_HOUR", defaults.register_per_ip_hour),
        trusted_proxy_hops=_int(env, "CHAT_TRUSTED_PROXY_HOPS", defaults.trusted_proxy_hops),
        auth_workers=_int(env, "CHAT_AUTH_WORKERS", defaults.auth_workers),
        forwarded_allow_ips=_list(env, "CHAT_FORWARDED_ALLOW_IPS"),
        refresh_reuse_grace=_float(env, "CHAT_REFRESH_REUSE_GRACE", defaults.refresh_reuse_grace),
        user_search_per_minute=_int(
            env, "CHAT_USER_SEARCH_PER_MINUTE", defaults.user_search_per_minute
        ),
        gateway_id=env.get("CHAT_GATEWAY_ID") or defaults.gateway_id,
        allowed_origins=_list(env, "CHAT_ALLOWED_ORIGINS"),
        max_frame_bytes=_int(env, "CHAT_MAX_FRAME_BYTES", defaults.max_frame_bytes),
        auth_timeout=_float(env, "CHAT_AUTH_TIMEOUT", defaults.auth_timeout),
        send_rate_per_sec=_float(env, "CHAT_SEND_RATE", defaults.send_rate_per_sec),
        send_burst=_int(env, "CHAT_SEND_BURST", defaults.send_burst),
        rate_strikes_before_close=_int(
            env, "CHAT_RATE_STRIKES", defaults.rate_strikes_before_close
        ),
        ws_ping_interval=_float(env, "CHAT_WS_PING_INTERVAL", defaults.ws_ping_interval),
        ws_ping_timeout=_float(env, "CHAT_WS_PING_TIMEOUT", defaults.ws_ping_timeout),
        send_queue_max=_int(env, "CHAT_SEND_QUEUE_MAX", defaults.send_queue_max),
        presence_heartbeat=_float(env, "CHAT_PRESENCE_HEARTBEAT", defaults.presence_heartbeat),
        presence_timeout=_float(env, "CHAT_PRESENCE_TIMEOUT", defaults.presence_timeout),
        shutdown_grace=_float(env, "CHAT_SHUTDOWN_GRACE", defaults.shutdown_grace),
        ack_cache_bytes=_int(env, "CHAT_ACK_CACHE_BYTES", defaults.ack_cache_bytes),
        presence_batch_ms=_int(env, "CHAT_PRESENCE_BATCH_MS", defaults.presence_batch_ms),
        max_group_members=_int(env, "CHAT_MAX_GROUP_MEMBERS", defaults.max_group_members),
        presence_url=env.get("CHAT_PRESENCE_URL", defaults.presence_url).rstrip("/"),
        history_shards=_int(env, "CHAT_HISTORY_SHARDS", defaults.history_shards),
        history_batch_size=_int(env, "CHAT_HISTORY_BATCH_SIZE", defaults.history_batch_size),
        history_batch_ms=_int(env, "CHAT_HISTORY_BATCH_MS", defaults.history_batch_ms),
        history_delivery_limit=_int(
            env, "CHAT_HISTORY_DELIVERY_LIMIT", defaults.history_delivery_limit
        ),
        environment=env.get("CHAT_ENV", defaults.environment),
    )
    if s.target not in ("all", "auth", "gateway", "history", "migrate"):
        raise SettingsError(
            f"CHAT_TARGET must be all|auth|gateway|history|migrate, not {s.target!r}"
        )
    if s.jwt_secret.strip().lower() in PLACEHOLDER_SECRETS or len(s.jwt_secret) < 32:
        if s.scaled or s.environment == "production":
            raise SettingsError(
                "CHAT_JWT_SECRET must be set to a random value of at least 32 characters "
                "in the scaled mode (there is no default secret)"
            )
        object.__setattr__(s, "jwt_secret", _dev_secret())
    for entry in s.forwarded_allow_ips:
        if entry == "*":
            continue
        try:
            ipaddress.ip_network(entry, strict=False)
        except ValueError:
            raise SettingsError(
                f"CHAT_FORWARDED_ALLOW_IPS: {entry!r} is not an address, a network or '*'"
            ) from None
    if s.trusted_proxy_hops < 0:
        object.__setattr__(s, "trusted_proxy_hops", 1 if s.scaled else 0)
    if s.history_shards <= 0:
        object.__setattr__(s, "history_shards", 4 if s.scaled else 1)
    return s


_settings: Settings | None = None


def get_settings() -> Settings:
    """The process-wide settings, read once."""
    global _settings
    if _settings is None:
        _settings = load_settings()
    return _settings


def set_settings(settings: Settings) -> None:
    """Install settings explicitly (tests, the all-in-one launcher)."""
    global _settings
    _settings = settings
