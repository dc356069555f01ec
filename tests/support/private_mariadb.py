"""A private MariaDB server for fault injection: own datadir, socket, port and pid file, started
and stopped by the test (the shared server on 3306 is never touched).

    db = PrivateMariaDB(); db.install(); db.start()
    url = db.create_database("chat")     # mysql://root@127.0.0.1:<port>/chat
    db.stop(); db.start()                # a real outage: connections refused meanwhile
    db.pause(); db.resume()              # SIGSTOP: a hung server
    db.cleanup()

Known traps handled here: ``--no-defaults`` (no /etc/mysql config), ``--user=root`` when run as
root, networking on 127.0.0.1 only.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.private_rabbit import free_port, port_open
from tests.support.services import missing


def _mariadbd() -> str | None:
    return shutil.which("mariadbd") or (
        "/usr/sbin/mariadbd" if os.path.exists("/usr/sbin/mariadbd") else None
    )


class PrivateMariaDB:
    def __init__(self, base: Path | None = None, buffer_pool: str = "64M") -> None:
        if shutil.which("mariadb-install-db") is None or _mariadbd() is None:
            missing("mariadb-install-db / mariadbd are not installed (private MariaDB needed)")
        self._own_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="chat-mariadb-"))
        self.datadir = self.base / "data"
        self.port = free_port({3306})
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.buffer_pool = buffer_pool

    def _user(self) -> list[str]:
        return ["--user=root"] if os.geteuid() == 0 else []

    def install(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(
            [
                "mariadb-install-db",
                "--no-defaults",
                f"--datadir={self.datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *self._user(),
            ],
            capture_output=True,
            timeout=180,
        )
        if r.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {r.stderr.decode()[-2000:]}")

    def start(self, timeout: float = 60.0) -> float:
        """Start on the datadir (again, after a stop) and wait until it answers; seconds."""
        assert not self.alive(), "already running"
        started = time.monotonic()
        mariadbd = _mariadbd()
        assert mariadbd is not None
        self.proc = subprocess.Popen(
            [
                mariadbd,
                "--no-defaults",
                f"--datadir={self.datadir}",
                f"--socket={self.base / 'sock'}",
                f"--port={self.port}",
                "--skip-networking=0",
                "--bind-address=127.0.0.1",
                f"--pid-file={self.base / 'pid'}",
                f"--log-error={self.base / 'error.log'}",
                f"--innodb-buffer-pool-size={self.buffer_pool}",
                "--innodb-log-file-size=32M",
                "--skip-log-bin",
                "--max-connections=500",
                *self._user(),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.paused = False
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited ({self.proc.returncode}): {self.error_log()}")
            if port_open(self.port) and self._answers():
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"private MariaDB not up in {timeout}s: {self.error_log()}")

    def _answers(self) -> bool:
        import pymysql

        try:
            conn = pymysql.connect(host="127.0.0.1", port=self.port, user="root", connect_timeout=2)
        except pymysql.MySQLError:
            return False
        conn.close()
        return True

    def execute(self, sql: str, database: str | None = None) -> list[tuple[object, ...]]:
        import pymysql

        conn = pymysql.connect(
            host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True
        )
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                return list(cur.fetchall())
        finally:
            conn.close()

    def create_database(self, name: str = "chat") -> str:
        self.execute(
            f"CREATE DATABASE IF NOT EXISTS `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        )
        return self.url(name)

    def url(self, name: str = "chat") -> str:
        return f"mysql://root@127.0.0.1:{self.port}/{name}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)
        self.paused = False

    def stop(self, timeout: float = 60.0) -> None:
        """A clean shutdown (SIGTERM); connections are refused until the next start."""
        if self.proc is None or self.proc.poll() is not None:
            return
        if self.paused:
            self.resume()
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def error_log(self) -> str:
        path = self.base / "error.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""
