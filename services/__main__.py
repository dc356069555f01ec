"""``python -m services <target>``: all | auth | gateway | history | migrate.

The target may also come from CHAT_TARGET. ``auth`` execs gunicorn; the others run uvicorn.
``python -m services reshard ...`` is the history shards' tool (services/history/reshard.py).
"""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import replace
from pathlib import Path

from services.common.settings import ROOT, SettingsError, load_settings


def migrate() -> None:
    from alembic.config import main as alembic_main

    alembic_main(argv=["-c", str(ROOT / "alembic.ini"), "upgrade", "head"])


def _sqlite_directory(url: str) -> Path:
    """Where the SQLite file of ``url`` lives (var/ by default), to create before migrating."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or name == ":memory:":
        return ROOT / "var"
    return Path(name).parent


def main(argv: list[str]) -> None:
    if len(argv) > 1 and argv[1] == "reshard":  # an operator's tool, not a service
        from services.history.reshard import main as reshard

        reshard(argv[2:])
        return
    env = dict(os.environ)
    if len(argv) > 1:
        env["CHAT_TARGET"] = argv[1]
    try:
        settings = load_settings(env)
    except SettingsError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    os.environ["CHAT_TARGET"] = settings.target
    from services.common import settings as settings_module

    settings_module.set_settings(settings)
    if settings.target == "migrate":
        migrate()
        return
    if settings.target == "auth":
        gunicorn = shutil.which("gunicorn") or os.path.join(
            os.path.dirname(sys.executable), "gunicorn"
        )
        args = [gunicorn, "-c", "python:services.auth.gunicorn_conf", "services.auth:create_app()"]
        os.execv(gunicorn, args)
    if settings.target == "all" and settings.database_url.startswith("sqlite"):
        _sqlite_directory(settings.database_url).mkdir(parents=True, exist_ok=True)
        migrate()  # the embedded mode migrates its own SQLite file at start
    from services.server import serve

    serve(replace(settings))


if __name__ == "__main__":
    main(sys.argv)
