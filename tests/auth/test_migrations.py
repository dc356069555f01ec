"""Alembic: one history for the shared schema, on SQLite and MariaDB, matching the models."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from services.common.db import make_engine
from services.common.models import Base, engine_owned
from services.common.settings import ROOT
from tests.auth.conftest import BACKENDS
from tests.support import services as svc


@pytest.fixture(params=BACKENDS)
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A brand-new, empty database of each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'fresh.db'}"
        return
    name = svc.create_database("chat_test_auth")
    try:
        yield svc.mysql_url(name)
    finally:
        svc.drop_database(name)


def config(url: str) -> Config:
    cfg = Config(str(ROOT / "alembic.ini"))
    cfg.attributes["url"] = url
    cfg.attributes["configure_logger"] = False
    return cfg


def schema_diff(url: str) -> list[object]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            opts = {"compare_type": True, "include_name": _modelled}
            ctx = MigrationContext.configure(conn, opts=opts)
            return list(compare_metadata(ctx, Base.metadata))
    finally:
        engine.dispose()


def _modelled(name: str | None, _type: str, _parents: object) -> bool:
    """The search index's engine-specific objects (FTS5 tables, the FULLTEXT index) are not in
    the models (models.search_ddl); migrations/env.py leaves them out the same way."""
    return name is None or not engine_owned(name)


def test_one_linear_history() -> None:
    script = ScriptDirectory.from_config(config("sqlite://"))
    heads = script.get_heads()
    assert len(heads) == 1
    bases = script.get_bases()
    assert bases == ["0001"]


def test_upgrade_creates_exactly_the_models(empty_url: str) -> None:
    command.upgrade(config(empty_url), "head")
    assert schema_diff(empty_url) == []
    engine = make_engine(empty_url)
    try:
        tables = {t for t in inspect(engine).get_table_names() if not engine_owned(t)}
    finally:
        engine.dispose()
    assert tables == set(Base.metadata.tables) | {"alembic_version"}


def test_downgrade_and_upgrade_again(empty_url: str) -> None:
    cfg = config(empty_url)
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = make_engine(empty_url)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
    assert schema_diff(empty_url) == []


def test_cli_takes_the_url_from_the_settings(empty_url: str) -> None:
    """`python -m alembic upgrade head` with CHAT_DATABASE_URL set, like `make migrate`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHAT_")}
    env["CHAT_DATABASE_URL"] = empty_url
    env["CHAT_JWT_SECRET"] = "migration-test-" + "z" * 40
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "upgrade", "head"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert schema_diff(empty_url) == []
    current = subprocess.run(
        [sys.executable, "-m", "alembic", "current"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    head = ScriptDirectory.from_config(config(empty_url)).get_current_head()
    assert f"{head} (head)" in current.stdout


def test_0002_fills_member_counts_and_usernames(empty_url: str) -> None:
    """An install with rooms from before 0002 keeps them: counts and member names are filled."""
    cfg = config(empty_url)
    command.upgrade(cfg, "0001")
    engine = make_engine(empty_url)
    try:
        with engine.begin() as conn:
            for uid, name in (("u1", "alice"), ("u2", "bob")):
                conn.execute(
                    text(
                        "INSERT INTO users (id, username, password_hash, created_ms) "
                        "VALUES (:i, :n, 'x', 1)"
                    ),
                    {"i": uid, "n": name},
                )
            conn.execute(
                text(
                    "INSERT INTO rooms (id, kind, name, created_ms, last_activity_ms) "
                    "VALUES ('r1', 'group', 'g', 1, 1)"
                )
            )
            for uid in ("u1", "u2"):
                conn.execute(
                    text(
                        "INSERT INTO memberships (room_id, user_id, joined_ms) VALUES ('r1', :u, 1)"
                    ),
                    {"u": uid},
                )
        command.upgrade(cfg, "head")
        assert schema_diff(empty_url) == []
        with engine.connect() as conn:
            assert conn.execute(text("SELECT member_count FROM rooms")).scalar_one() == 2
            names = conn.execute(text("SELECT username FROM memberships ORDER BY username"))
            assert list(names.scalars()) == ["alice", "bob"]
    finally:
        engine.dispose()
