"""The Flask-SQLAlchemy extension, bound to the shared models (``services.common.models``)."""

from __future__ import annotations

from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.engine import Engine

from services.common.db import make_engine
from services.common.models import Base


class ChatSQLAlchemy(SQLAlchemy):
    """Engines come from ``services.common.db.make_engine`` (PyMySQL + utf8mb4 and
    pool_pre_ping for MySQL, WAL and foreign keys for SQLite), like every other service's."""

    def _make_engine(self, bind_key: str | None, options: dict[str, Any], app: Flask) -> Engine:
        options = dict(options)
        url = options.pop("url")
        if not isinstance(url, str):
            url = url.render_as_string(hide_password=False)
        return make_engine(url, **options)


# Plain declarative models on the shared Base: db.metadata is Base.metadata.
db = ChatSQLAlchemy(model_class=Base)
