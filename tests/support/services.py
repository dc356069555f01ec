"""Real-service fixtures' helpers: own RabbitMQ vhosts and MariaDB databases per test session.

Where a service is missing, tests skip with a loud reason; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import socket

import pytest

from tools import scratch

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RABBIT_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("TEST_RABBITMQ_PORT", "5672"))
MYSQL_HOST = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("TEST_MYSQL_PASSWORD", "")
_MYSQL = {"host": MYSQL_HOST, "port": MYSQL_PORT, "user": MYSQL_USER, "password": MYSQL_PASSWORD}

# One test body on both databases: the all-in-one mode's SQLite and the scaled mode's MariaDB.
# The MariaDB half is marked `scaled`, so `make test-fast` leaves it to `make test`.
BACKENDS = ["sqlite", pytest.param("mariadb", marks=pytest.mark.scaled)]


def missing(reason: str) -> None:
    """Skip loudly, or fail under CI=true (a real-service suite must run in CI)."""
    if CI:
        pytest.fail(f"CI=true and {reason}", pytrace=False)
    pytest.skip(f"REAL-SERVICE SUITE SKIPPED: {reason}")


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def create_vhost(prefix: str = "chat_test") -> str:
    if not port_open(RABBIT_HOST, RABBIT_PORT):
        missing(f"RabbitMQ is not reachable at {RABBIT_HOST}:{RABBIT_PORT}")
    if scratch.rabbitmqctl() is None:
        missing("rabbitmqctl is not installed (needed to create a test vhost)")
    return scratch.create_vhost(prefix)


delete_vhost = scratch.delete_vhost


def amqp_url(vhost: str) -> str:
    return f"amqp://guest:guest@{RABBIT_HOST}:{RABBIT_PORT}/{vhost}"


def _mysql_connect():  # type: ignore[no-untyped-def]
    import pymysql

    return pymysql.connect(
        host=MYSQL_HOST, port=MYSQL_PORT, user=MYSQL_USER, password=MYSQL_PASSWORD, autocommit=True
    )


def create_database(prefix: str = "chat_test") -> str:
    if not port_open(MYSQL_HOST, MYSQL_PORT):
        missing(f"MySQL/MariaDB is not reachable at {MYSQL_HOST}:{MYSQL_PORT}")
    return scratch.create_database(prefix, **_MYSQL)


def drop_database(name: str) -> None:
    scratch.drop_database(name, **_MYSQL)


def mysql_url(name: str) -> str:
    auth = MYSQL_USER + (f":{MYSQL_PASSWORD}" if MYSQL_PASSWORD else "")
    return f"mysql://{auth}@{MYSQL_HOST}:{MYSQL_PORT}/{name}"


def mysql_count(name: str, sql: str) -> int:
    conn = _mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"USE `{name}`")
            cur.execute(sql)
            row = cur.fetchone()
            return int(row[0]) if row else 0
    finally:
        conn.close()
