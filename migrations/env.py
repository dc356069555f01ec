"""Alembic environment: the shared schema of every service, on MySQL/MariaDB or SQLite.

The URL is, in order: ``config.attributes["url"]`` (tests, ``python -m services migrate``),
else ``services.common.settings`` (``CHAT_DATABASE_URL``), normalized by
``services.common.db.normalize_url``. A caller may also hand over an open connection in
``config.attributes["connection"]``.
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context

from services.common.db import make_engine, normalize_url
from services.common.models import Base, engine_owned

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    url = config.attributes.get("url")
    if not url:
        from services.common.settings import get_settings

        url = get_settings().database_url
    return normalize_url(str(url))


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Leave the search index's engine-specific objects (FTS5 tables, the FULLTEXT index) out
    of autogenerate's comparison: the models do not describe them (models.search_ddl)."""
    return name is None or not engine_owned(name)


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=target_metadata,
        compare_type=True,
        include_name=include_name,
        render_as_batch=True,  # SQLite cannot ALTER most things: copy-and-move tables
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=database_url(), literal_binds=True, dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection=connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(database_url())
    try:
        with engine.connect() as conn:
            _configure(connection=conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
