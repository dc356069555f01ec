"""Browser fixtures: Debian's Chromium driven by Playwright (never a downloaded browser), and a
static server for web/ (for tests of the client's modules that need no backend).

`cluster_url` and `kill_gateway` come from tests/conftest.py."""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.support import services as svc

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WEB = Path(__file__).resolve().parents[2] / "web"


@pytest.fixture(scope="package")  # playwright's loop must not outlive these tests
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        svc.missing("chromium is not installed (run `make setup-system`)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class _Quiet(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".js": "text/javascript"}

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="session")
def web_url() -> Iterator[str]:
    """web/ over plain HTTP on a free port (no API behind it)."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(WEB)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def tabs() -> Iterator[list[Any]]:
    """The browser tabs a test opens (``open_tab``), closed afterwards, the last first."""
    opened: list[Any] = []
    yield opened
    for t in reversed(opened):
        t.close()
