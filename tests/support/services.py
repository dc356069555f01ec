"""Real-service fixtures' helpers: own RabbitMQ vhosts and MariaDB databases per test session.

Where a service is missing, tests skip with a loud reason; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess

import pytest

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RABBIT_HOST = os.environ.get("TEST_RABBITMQ_HOST", "127.0.0.1")
RABBIT_PORT = int(os.environ.get("TEST_RABBITMQ_PORT", "5672"))
MYSQL_HOST = os.environ.get("TEST_MYSQL_HOST", "127.0.0.1")
MYSQL_PORT = int(os.environ.get("TEST_MYSQL_PORT", "3306"))
MYSQL_USER = os.environ.get("TEST_MYSQL_USER", "root")
MYSQL_PASSWORD = os.environ.get("TEST_MYSQL_PASSWORD", "")


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


def rabbitmqctl() -> str | None:
    return shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
    )


def create_vhost(prefix: str = "chat_test") -> str:
    if not port_open(RABBIT_HOST, RABBIT_PORT):
        missing(f"RabbitMQ is not reachable at {RABBIT_HOST}:{RABBIT_PORT}")
    ctl = rabbitmqctl()
    if ctl is None:
        missing("rabbitmqctl is not installed (needed to create a test vhost)")
    assert ctl is not None
    vhost = f"{prefix}_{secrets.token_hex(4)}"
    for args in (["add_vhost", vhost], ["set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"]):
        subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)
    return vhost


def delete_vhost(vhost: str) -> None:
    ctl = rabbitmqctl()
    if ctl:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


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
    name = f"{prefix}_{secrets.token_hex(4)}"
    conn = _mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
    finally:
        conn.close()
    return name


def drop_database(name: str) -> None:
    conn = _mysql_connect()
    try:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS `{name}`")
    finally:
        conn.close()


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
