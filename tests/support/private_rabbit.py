"""A private RabbitMQ node for fault injection: own node name, AMQP and distribution ports, data
directory, config and Erlang cookie (its own HOME). kill -9, SIGSTOP and restarts only ever
touch this node; the shared node on 5672 is never involved.

    with PrivateRabbit() as rabbit:
        url = rabbit.url()            # amqp://guest:guest@127.0.0.1:<port>/
        rabbit.kill9(); rabbit.start()
        rabbit.pause(); rabbit.resume()

Known traps handled here: the distribution port defaults to AMQP + 20000 (set it explicitly so
it cannot collide with the shared node's 25672); ``/usr/sbin/rabbitmq-server`` switches user,
so the scripts of ``/usr/lib/rabbitmq/bin`` are used; ``/etc/rabbitmq/rabbitmq-env.conf`` would
rename the node, so an empty one of our own is pointed to.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.services import missing

SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"


def free_port(avoid: set[int] | None = None) -> int:
    """A free TCP port on 127.0.0.1 (not in ``avoid``)."""
    avoid = avoid or set()
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def amqp_handshake(port: int, timeout: float = 2.0) -> bool:
    """True when the broker answers the AMQP protocol header with Connection.Start."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.settimeout(timeout)
            s.sendall(b"AMQP\x00\x00\x09\x01")
            head = s.recv(7)
            return len(head) == 7 and head[0] == 1  # a METHOD frame: connection.start
    except OSError:
        return False


class PrivateRabbit:
    """One private node. The keyword arguments are for a cluster of them
    (tests/support/private_rabbit_cluster.py): a node name chosen by the caller, a shared
    ``cookie``, a private epmd on ``epmd_port`` (default: the system's epmd on 4369, where the
    unique node name keeps it apart), ports chosen by the caller and extra ``rabbitmq.conf``
    lines."""

    def __init__(
        self,
        base: Path | None = None,
        boot_timeout: float = 90.0,
        *,
        node: str | None = None,
        cookie: str | None = None,
        epmd_port: int | None = None,
        port: int | None = None,
        dist_port: int | None = None,
        config: list[str] | None = None,
    ) -> None:
        if not os.path.exists(SERVER):
            missing(f"{SERVER} is not installed (a private RabbitMQ node is needed)")
        self._own_base = base is None
        self.base = base or Path(tempfile.mkdtemp(prefix="chat-rabbit-"))
        self.node = node or f"chat_test_{secrets.token_hex(4)}@localhost"
        self.port = port or free_port({5672, 25672})
        self.dist_port = dist_port or free_port({5672, 25672, self.port, self.port + 20000})
        assert {self.port, self.dist_port}.isdisjoint({5672, 25672, 4369}), "shared node's ports"
        self.cookie = cookie or secrets.token_hex(16)
        self.epmd_port = epmd_port
        self.boot_timeout = boot_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.paused = False
        self.starts = 0
        (self.base / "mnesia").mkdir(parents=True, exist_ok=True)
        (self.base / "log").mkdir(exist_ok=True)
        (self.base / "home").mkdir(exist_ok=True)
        cookie_file = self.base / "home" / ".erlang.cookie"  # the node's and rabbitmqctl's
        cookie_file.unlink(missing_ok=True)
        cookie_file.write_text(self.cookie)
        cookie_file.chmod(0o400)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq-env.conf").write_text("")
        (self.base / "rabbitmq.conf").write_text(
            "\n".join(
                [
                    f"listeners.tcp.local = 127.0.0.1:{self.port}",
                    "loopback_users.guest = true",
                    "disk_free_limit.absolute = 50MB",
                    "log.console = false",
                    "log.file.level = warning",
                    *(config or []),
                    "",
                ]
            )
        )

    # -- environment ------------------------------------------------------------------------
    def env(self) -> dict[str, str]:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_", "CHAT_"))
        }
        env.update(
            HOME=str(self.base / "home"),
            RABBITMQ_NODENAME=self.node,
            RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_MNESIA_BASE=str(self.base / "mnesia"),
            RABBITMQ_LOG_BASE=str(self.base / "log"),
            RABBITMQ_CONFIG_FILE=str(self.base / "rabbitmq.conf"),
            RABBITMQ_CONF_ENV_FILE=str(self.base / "rabbitmq-env.conf"),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base / "enabled_plugins"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base / "advanced.config"),
            RABBITMQ_PID_FILE=str(self.base / "rabbit.pid"),
            ERL_EPMD_ADDRESS="127.0.0.1",
            # Erlang distribution on loopback only (it would listen on every interface)
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}",
            # rabbitmqctl's own node listens on any free port, not in the range 35672-35682
            # that every rabbitmqctl of this machine (the shared node's too) competes for
            RABBITMQ_CTL_DIST_PORT_MIN="0",
            RABBITMQ_CTL_DIST_PORT_MAX="0",
        )
        if self.epmd_port is not None:
            env["ERL_EPMD_PORT"] = str(self.epmd_port)
        return env

    def url(self, vhost: str = "", **query: object) -> str:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{vhost}" + (f"?{q}" if q else "")

    def ctl(self, *args: str, timeout: float = 60.0) -> str:
        """rabbitmqctl against this node (its own cookie through HOME)."""
        r = subprocess.run(
            [str(Path(SERVER).with_name("rabbitmqctl")), "-n", self.node, "-q", *args],
            env=self.env(),
            capture_output=True,
            timeout=timeout,
        )
        if r.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {args}: {r.stderr.decode()[-500:]}")
        return r.stdout.decode()

    def add_vhost(self, name: str) -> str:
        self.ctl("add_vhost", name)
        self.ctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
        return name

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> float:
        """Start (or restart on the same data) and wait for AMQP; the boot time in seconds."""
        assert not self.alive(), "already running"
        started = time.monotonic()
        with open(self.base / "log" / "stdout.log", "ab") as out:  # the child keeps its copy
            self.proc = subprocess.Popen(
                [SERVER],
                env=self.env(),
                cwd=self.base,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group: signals reach beam and children
            )
        self.starts += 1
        self.paused = False
        deadline = started + self.boot_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"private RabbitMQ exited ({self.proc.returncode}):\n{self.log()}"
                )
            if amqp_handshake(self.port):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(f"private RabbitMQ not up in {self.boot_timeout}s:\n{self.log()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _signal(self, sig: int) -> None:
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill9(self) -> None:
        """kill -9 the whole node (beam and its helpers), at once, no shutdown."""
        assert self.alive()
        self._signal(signal.SIGKILL)
        assert self.proc is not None
        self.proc.wait(10)
        self._wait_port_closed()

    def pause(self) -> None:
        """SIGSTOP: the node hangs, its TCP connections stay open but nothing moves."""
        self._signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self._signal(signal.SIGCONT)
        self.paused = False

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if self.paused:
                self.resume()
            self._signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait(10)
        else:  # the shell is gone: make sure nothing of the group survives
            self._signal(signal.SIGKILL)

    def cleanup(self) -> None:
        self.stop()
        if self._own_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def _wait_port_closed(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and port_open(self.port):
            time.sleep(0.05)

    def log(self, tail: int = 3000) -> str:
        parts = []
        for path in sorted((self.base / "log").glob("*.log")):
            parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-tail:]}")
        return "\n".join(parts)

    def __enter__(self) -> PrivateRabbit:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
