"""Throwaway RabbitMQ vhosts and MySQL databases, one per test session or benchmark part, on
the machine's shared servers (which are never reconfigured otherwise). Used by
``tests/support/services.py`` (which first checks the servers are there), ``bench/common.py``
and ``bench/history_writer.py``."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess


def rabbitmqctl() -> str | None:
    return shutil.which("rabbitmqctl") or (
        "/usr/sbin/rabbitmqctl" if os.path.exists("/usr/sbin/rabbitmqctl") else None
    )


def create_vhost(prefix: str, *, user: str = "guest") -> str:
    """A new vhost ``<prefix>_<random>`` where ``user`` may do anything."""
    ctl = rabbitmqctl()
    if ctl is None:
        raise RuntimeError("rabbitmqctl is not installed")
    vhost = f"{prefix}_{secrets.token_hex(4)}"
    for args in (["add_vhost", vhost], ["set_permissions", "-p", vhost, user, ".*", ".*", ".*"]):
        subprocess.run([ctl, "-q", *args], check=True, capture_output=True, timeout=60)
    return vhost


def delete_vhost(vhost: str) -> None:
    ctl = rabbitmqctl()
    if ctl:
        subprocess.run([ctl, "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


def _execute(sql: str, host: str, port: int, user: str, password: str) -> None:
    import pymysql

    conn = pymysql.connect(host=host, port=port, user=user, password=password, autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def create_database(
    prefix: str, *, host: str, port: int, user: str = "root", password: str = ""
) -> str:
    """A new database ``<prefix>_<random>`` (utf8mb4, binary collation like the migrations)."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    sql = f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    _execute(sql, host, port, user, password)
    return name


def drop_database(
    name: str, *, host: str, port: int, user: str = "root", password: str = ""
) -> None:
    _execute(f"DROP DATABASE IF EXISTS `{name}`", host, port, user, password)
