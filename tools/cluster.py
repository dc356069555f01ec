"""The scaled mode on one machine: migrate, auth under gunicorn, N gateways and the history
service under uvicorn, behind nginx routing by path as API.md says.

    python -m tools.cluster up [--gateways 3] [--port 8080]   # starts in the background
    python -m tools.cluster down                              # stops what `up` started

Tests use ``Cluster`` directly (own vhost, own database, own ports).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PYTHON = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv").exists() else sys.executable
STATE = ROOT / "var" / "cluster"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError) as exc:
            last = exc
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready in {timeout}s (last: {last})")


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {state}/nginx.pid;
error_log {state}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {state}/nginx-tmp/body;
  proxy_temp_path {state}/nginx-tmp/proxy;
  fastcgi_temp_path {state}/nginx-tmp/fastcgi;
  uwsgi_temp_path {state}/nginx-tmp/uwsgi;
  scgi_temp_path {state}/nginx-tmp/scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
  upstream auth {{ server 127.0.0.1:{auth}; keepalive 16; }}
  upstream history {{ {history} keepalive 16; }}
  upstream gateway {{ least_conn; {gateways} }}
  server {{
    listen 127.0.0.1:{port};
    client_max_body_size 1m;
    proxy_http_version 1.1;
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header Connection "";
    proxy_next_upstream error timeout;
    # /api/auth/ includes the browser session's /api/auth/session/* (its cookie's path);
    # /api/users without a slash: GET /api/users?prefix= as well as /api/users/<name>
    location /api/auth/ {{ proxy_pass http://auth; }}
    location /api/users {{ proxy_pass http://auth; }}
    location /api/rooms {{ proxy_pass http://auth; }}
    location /api/history/ {{ proxy_pass http://history; }}
    location = /api/search {{ proxy_pass http://history; }}
    location /api/presence {{ proxy_pass http://gateway; }}
    location = /ws {{
      proxy_pass http://gateway;
      # a location with its own proxy_set_header inherits none of the server's: repeat them
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
      proxy_send_timeout 3600s;
    }}
    location / {{ proxy_pass http://gateway; }}
  }}
}}
"""


@dataclass
class Proc:
    name: str
    argv: list[str]
    env: dict[str, str]
    port: int
    popen: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, logs: Path) -> None:
        self.log_path = logs / f"{self.name}.log"
        out = open(self.log_path, "ab")
        self.popen = subprocess.Popen(
            self.argv,
            env=self.env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def restart(self) -> None:
        """Start again with the same command, environment and port (after a kill)."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        assert self.log_path is not None
        self.start(self.log_path.parent)
        wait_http(self.url + "/readyz", 60, self.popen)

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def signal(self, sig: int) -> None:
        if self.popen is not None and self.popen.poll() is None:
            os.kill(self.popen.pid, sig)

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


@dataclass
class Cluster:
    database_url: str
    broker_url: str
    gateways: int = 3
    writers: int = 1  # history processes (they share the history shards)
    port: int | None = None  # nginx port; None = no nginx
    state: Path = STATE
    extra_env: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    nginx: Proc | None = None
    secret: str = field(default_factory=lambda: secrets.token_urlsafe(48))
    ports: list[int] = field(default_factory=list)  # every process's port: allowed origins

    def broker_for(self, i: int) -> str:
        """``broker_url`` lists several nodes (comma-separated)? Process ``i`` starts with
        node ``i mod n``: gateways and writers spread over a cluster's nodes."""
        urls = [u for u in self.broker_url.split(",") if u]
        k = i % len(urls)
        return ",".join(urls[k:] + urls[:k])

    def env(self, **more: str) -> dict[str, str]:
        env = dict(os.environ)
        origins = ["http://127.0.0.1", "http://localhost"]
        for port in ([self.port] if self.port else []) + self.ports:
            origins += [f"http://127.0.0.1:{port}", f"http://localhost:{port}"]
        env.update(
            CHAT_DATABASE_URL=self.database_url,
            CHAT_BROKER_URL=self.broker_url,
            CHAT_JWT_SECRET=self.secret,
            CHAT_HOST="127.0.0.1",
            CHAT_ALLOWED_ORIGINS=",".join(origins),
            CHAT_WEB_DIR=str(ROOT / "web"),
            PYTHONUNBUFFERED="1",
        )
        env.update(self.extra_env)
        env.update(more)
        return env

    @property
    def auth(self) -> Proc:
        return next(p for p in self.procs if p.name == "auth")

    @property
    def history(self) -> Proc:
        return next(p for p in self.procs if p.name == "history")

    @property
    def history_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("history")]

    def add_history(self, i: int, start: bool = True, port: int | None = None) -> Proc:
        """Another history process (writer and read API): the writers share the shards."""
        if port is None:
            port = free_port()
            self.ports.append(port)
        proc = Proc(
            "history" if i == 1 else f"history{i}",
            [PYTHON, "-m", "services", "history"],
            self.env(
                CHAT_PORT=str(port),
                CHAT_GATEWAY_ID=f"history-{i}-{port}",
                CHAT_BROKER_URL=self.broker_for(i),
            ),
            port,
        )
        self.procs.append(proc)
        if start:
            proc.start(self.state / "logs")
            wait_http(proc.url + "/readyz", 60, proc.popen)
        return proc

    @property
    def gateway_procs(self) -> list[Proc]:
        return [p for p in self.procs if p.name.startswith("gateway")]

    @property
    def base_url(self) -> str:
        assert self.port is not None
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Cluster:
        self.state.mkdir(parents=True, exist_ok=True)
        logs = self.state / "logs"
        logs.mkdir(exist_ok=True)
        migrate = subprocess.run(
            [PYTHON, "-m", "services", "migrate"],
            env=self.env(),
            cwd=ROOT,
            capture_output=True,
            timeout=120,
        )
        if migrate.returncode != 0:
            raise RuntimeError(f"migration failed: {migrate.stderr.decode()[-2000:]}")
        auth_port = free_port()
        h_ports = [free_port() for _ in range(self.writers)]
        gw_ports = [free_port() for _ in range(self.gateways)]
        self.ports += [auth_port, *h_ports, *gw_ports]  # known before any env() is built
        self.procs.append(
            Proc(
                "auth",
                [PYTHON, "-m", "services", "auth"],
                self.env(
                    CHAT_PORT=str(auth_port),
                    CHAT_GATEWAY_ID="auth",
                    # member lists ask a gateway who is online (any gateway knows everyone)
                    CHAT_PRESENCE_URL=f"http://127.0.0.1:{gw_ports[0]}",
                ),
                auth_port,
            )
        )
        for i, hport in enumerate(h_ports, start=1):
            self.add_history(i, start=False, port=hport)
        for i in range(1, self.gateways + 1):
            self.add_gateway(i, start=False, port=gw_ports[i - 1])
        for p in self.procs:
            p.start(logs)
        for p in self.procs:
            wait_http(p.url + "/readyz", 60, p.popen)
        if self.port:
            self._start_nginx(logs)
        return self

    def add_gateway(self, i: int, start: bool = True, port: int | None = None) -> Proc:
        if port is None:
            port = free_port()
            self.ports.append(port)
        proc = Proc(
            f"gateway{i}",
            [PYTHON, "-m", "services", "gateway"],
            self.env(
                CHAT_PORT=str(port),
                CHAT_GATEWAY_ID=f"gw{i}-{port}",
                CHAT_BROKER_URL=self.broker_for(i + 1),
            ),
            port,
        )
        self.procs.append(proc)
        if start:
            proc.start(self.state / "logs")
            wait_http(proc.url + "/readyz", 60, proc.popen)
        return proc

    def _start_nginx(self, logs: Path) -> None:
        assert self.port is not None
        tmp = self.state / "nginx-tmp"
        tmp.mkdir(exist_ok=True)
        os.chmod(tmp, 0o777)
        gws = " ".join(
            f"server 127.0.0.1:{g.port} max_fails=1 fail_timeout=3s;" for g in self.gateway_procs
        )
        conf = self.state / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(
                state=self.state,
                auth=self.auth.port,
                history=" ".join(f"server 127.0.0.1:{h.port};" for h in self.history_procs),
                gateways=gws,
                port=self.port,
            )
        )
        nginx = "/usr/sbin/nginx"
        if not os.path.exists(nginx):
            raise RuntimeError("nginx is not installed: run `make setup-system`")
        self.nginx = Proc(
            "nginx",
            [
                nginx,
                "-e",
                str(self.state / "nginx-error.log"),
                "-c",
                str(conf),
                "-p",
                str(self.state),
            ],
            dict(os.environ),
            self.port,
        )
        self.nginx.start(logs)
        wait_http(self.base_url + "/healthz", 20, self.nginx.popen)

    def stop(self) -> None:
        if self.nginx is not None:
            self.nginx.stop()
        for p in reversed(self.procs):
            p.stop()

    def pids(self) -> dict[str, int]:
        out = {p.name: p.popen.pid for p in self.procs if p.popen}
        if self.nginx and self.nginx.popen:
            out["nginx"] = self.nginx.popen.pid
        return out


def _down() -> None:
    pidfile = STATE / "pids.json"
    if not pidfile.exists():
        print("no cluster running")
        return
    pids: dict[str, int] = json.loads(pidfile.read_text())
    for name, pid in pids.items():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
        print(f"stopping {name} ({pid})")
    deadline = time.monotonic() + 15
    for pid in pids.values():
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.1)
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    pidfile.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.cluster")
    parser.add_argument("command", choices=["up", "down"])
    parser.add_argument("--gateways", type=int, default=int(os.environ.get("GATEWAYS", "3")))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    args = parser.parse_args()
    if args.command == "down":
        _down()
        return
    if (STATE / "pids.json").exists():
        _down()
    secret_file = STATE / "jwt-secret"
    STATE.mkdir(parents=True, exist_ok=True)
    if not secret_file.exists():
        secret_file.write_text(secrets.token_urlsafe(48))
        secret_file.chmod(0o600)
    db = os.environ.get("CHAT_DATABASE_URL", "mysql://root@127.0.0.1:3306/chat")
    _ensure_mysql_database(db)
    cluster = Cluster(
        database_url=db,
        broker_url=os.environ.get("CHAT_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/"),
        gateways=args.gateways,
        port=args.port,
        secret=os.environ.get("CHAT_JWT_SECRET") or secret_file.read_text().strip(),
    )
    try:
        cluster.start()
    except Exception:
        (STATE / "pids.json").write_text(json.dumps(cluster.pids()))
        _down()
        raise
    (STATE / "pids.json").write_text(json.dumps(cluster.pids()))
    print(f"cluster up: {cluster.base_url} (auth, history, {args.gateways} gateways, nginx)")
    print(f"logs in {STATE / 'logs'}; stop with `make cluster-down`")


def _ensure_mysql_database(url: str) -> None:
    """Create the database named in a mysql:// URL if it does not exist."""
    if not url.startswith("mysql"):
        return
    import pymysql
    from sqlalchemy.engine import make_url

    u = make_url(url.replace("mysql://", "mysql+pymysql://", 1))
    conn = pymysql.connect(
        host=u.host or "127.0.0.1",
        port=u.port or 3306,
        user=u.username or "root",
        password=u.password or "",
    )
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{u.database}` CHARACTER SET utf8mb4")
    finally:
        conn.close()


if __name__ == "__main__":
    main()
