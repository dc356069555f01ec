"""An all-in-one process (``python -m services all``) of a test's own: SQLite in a directory,
the in-process bus, a port. It can be killed and started again on the same database."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
from pathlib import Path

from tests.support.client import Stack
from tools.cluster import PYTHON, ROOT, free_port, wait_http


class AllInOne:
    def __init__(self, state: Path, env: dict[str, str] | None = None) -> None:
        self.state = state
        self.port = free_port()
        self.secret = secrets.token_urlsafe(48)
        self.database_url = f"sqlite:///{state / 'chat.db'}"
        self.env = dict(os.environ)
        self.env.update(env or {})
        self.env.update(
            CHAT_DATABASE_URL=self.database_url,
            CHAT_BROKER_URL="memory://",
            CHAT_PORT=str(self.port),
            CHAT_HOST="127.0.0.1",
            CHAT_JWT_SECRET=self.secret,
            CHAT_GATEWAY_ID="aio",
            CHAT_ALLOWED_ORIGINS=f"http://127.0.0.1,http://127.0.0.1:{self.port}",
        )
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stack(self) -> Stack:
        extra = {"proc": self.proc, "tmp": self.state, "secret": self.secret}
        extra["database_url"] = self.database_url
        return Stack("allinone", self.url, self.url, [self.url], base_url=self.url, extra=extra)

    def start(self, timeout: float = 60) -> AllInOne:
        log = open(self.state / "server.log", "ab")
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "services", "all"],
            env=self.env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_http(self.url + "/readyz", timeout, self.proc)
        except Exception:
            self.proc.kill()
            print((self.state / "server.log").read_text()[-4000:], file=sys.stderr)
            raise
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
