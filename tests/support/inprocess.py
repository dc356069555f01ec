"""The production composition (``services.app.create_app``) built inside the test process."""

from __future__ import annotations

import logging

from starlette.applications import Starlette

from services.common.settings import Settings


def build_app(settings: Settings) -> Starlette:
    """``services.app.create_app(settings)``, as ``python -m services <target>`` builds it. The
    factory installs the process's logging; pytest's capture is put back afterwards."""
    from services.app import create_app

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        return create_app(settings)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
