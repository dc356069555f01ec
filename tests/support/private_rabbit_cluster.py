"""A private RabbitMQ cluster on this machine: N PrivateRabbit nodes (private_rabbit.py) sharing
one Erlang cookie and one private epmd, joined into one cluster. For tests that kill, stop,
freeze and restart broker nodes; the shared node on 5672 (and the system's epmd on 4369) are
never involved.

    def test_x(rabbit_cluster):            # module-scoped cluster, healed before each test
        c = rabbit_cluster
        c.urls(heartbeat=2)                # one amqp:// URL per node
        leaders = asyncio.run(declare_spread_quorum_queues(c, ["q0", "q1", "q2"]))
        c.kill9(2); c.start_node(2)        # it rejoins by itself (its data dir remembers)
        c.running_nodes(via=0)             # node names, as node 0 sees them
        c.leaders()                        # {queue: leader node name}

    with PrivateRabbitCluster(nodes=3) as c: ...   # the same without pytest

Nodes are numbered from 0. All boot at once: node 0 standalone, the others (blank) join it as
they boot (classic config peer discovery, retried until node 0 answers); a node that booted
standalone all the same is joined with ``rabbitmqctl stop_app``, ``reset``, ``join_cluster``,
``start_app``. Everything lives in one temp dir (each node's data, logs, config, and HOME with
the shared ``.erlang.cookie``), removed by ``cleanup()``, which kill -9s every process first
(nothing of a throwaway cluster needs a graceful stop).

Isolation: every node has its own AMQP and distribution ports (never 5672/25672 nor AMQP+20000),
its distribution listens on 127.0.0.1 only, and the nodes, rabbitmqctl and erl_call use an epmd
of their own (ERL_EPMD_PORT) that this class starts in the foreground and kills: nothing is
registered with the system's epmd, and no ``epmd -daemon`` is left behind.

Queries (``running_nodes``, ``queues``, ``leaders``) go through erl_call (~20 ms) rather than
rabbitmqctl (an Erlang VM boot per call: 2-3 s on a loaded 2-core machine).
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import aio_pika
import aiormq
import pytest

from tests.support.private_rabbit import SERVER, PrivateRabbit, amqp_handshake, port_open
from tests.support.services import missing

EPMD = "/usr/bin/epmd"
# erlang-base's C client: one RPC to a node in ~20 ms
ERL_CALL = "/usr/lib/erlang/bin/erl_call"
CTL = str(Path(SERVER).with_name("rabbitmqctl"))
# the shared node's AMQP, distribution, management and epmd ports, and rabbitmqctl's default
# distribution range (35672-35682): never taken by a private node
RESERVED = {4369, 5672, 15672, 25672, *range(35672, 35683)}
# extra rabbitmq.conf lines for every node of a cluster: after a long freeze (longer than
# net_ticktime, 60 s) the nodes that saw a peer vanish and come back heal by themselves
CLUSTER_CONFIG = ["cluster_partition_handling = autoheal"]

T = TypeVar("T")


def free_ports(count: int, avoid: set[int]) -> list[int]:
    """``count`` distinct free ports on 127.0.0.1, none in ``avoid`` nor 20000 above another."""
    ports: list[int] = []
    socks = []
    try:
        while len(ports) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            taken = avoid | set(ports) | {p + 20000 for p in ports} | {p - 20000 for p in ports}
            if port in taken:
                s.close()
                continue
            socks.append(s)  # held until all are chosen: the OS cannot hand one out twice
            ports.append(port)
    finally:
        for s in socks:
            s.close()
    return ports


def wait_until(check: Callable[[], T], timeout: float, what: str, interval: float = 0.25) -> T:
    """Poll ``check`` until it returns something truthy; raise TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:  # a CLI call against a node that is restarting
            last = e
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            raise TimeoutError(f"not within {timeout:.0f}s: {what} (last: {last!r})")
        time.sleep(interval)


class PrivateRabbitCluster:
    def __init__(
        self,
        nodes: int = 3,
        boot_timeout: float = 180.0,
        config: Sequence[str] = (),
    ) -> None:
        for path in (SERVER, CTL, EPMD, ERL_CALL):
            if not os.path.exists(path):
                missing(f"{path} is not installed (a private RabbitMQ cluster is needed)")
        assert nodes >= 1
        self.base = Path(tempfile.mkdtemp(prefix="chat-rabbit-cluster-"))
        self.cookie = secrets.token_hex(16)
        self.boot_timeout = boot_timeout
        ports = free_ports(1 + 2 * nodes, RESERVED)
        self.epmd_port = ports[0]
        self.epmd: subprocess.Popen[bytes] | None = None
        names = [f"chat_rc{i}_{secrets.token_hex(4)}@localhost" for i in range(nodes)]

        # node 0 boots standalone; a blank node 1.. boots at the same time and joins node 0
        # (classic config peer discovery, retried every second until node 0 answers; the list
        # must hold the node itself); a node with data (a restart) ignores this
        def discovery(i: int) -> list[str]:
            if i == 0:
                return []
            return [
                "cluster_formation.peer_discovery_backend = classic_config",
                f"cluster_formation.classic_config.nodes.1 = {names[0]}",
                f"cluster_formation.classic_config.nodes.2 = {names[i]}",
                "cluster_formation.discovery_retry_limit = 180",
                "cluster_formation.discovery_retry_interval = 1000",
            ]

        self.nodes = [
            PrivateRabbit(
                self.base / f"n{i}",
                boot_timeout,
                node=names[i],
                cookie=self.cookie,
                epmd_port=self.epmd_port,
                port=ports[1 + 2 * i],
                dist_port=ports[2 + 2 * i],
                config=[*CLUSTER_CONFIG, *discovery(i), *config],
            )
            for i in range(nodes)
        ]
        self.boot_seconds: float | None = None  # the last start(): boots, joins, all running
        self.timings: dict[str, float] = {}
        self._closed = False

    # -- addresses --------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.nodes)

    def url(self, i: int, vhost: str = "", **query: object) -> str:
        return self.nodes[i].url(vhost, **query)

    def urls(self, vhost: str = "", **query: object) -> list[str]:
        """One amqp:// URL per node, e.g. ``urls(heartbeat=2)``."""
        return [n.url(vhost, **query) for n in self.nodes]

    def node_name(self, i: int) -> str:
        return self.nodes[i].node

    def index(self, node_name: str) -> int:
        return [n.node for n in self.nodes].index(node_name)

    def alive(self, i: int) -> bool:
        return self.nodes[i].alive() and not self.nodes[i].paused

    def live(self) -> list[int]:
        return [i for i in range(len(self.nodes)) if self.alive(i)]

    # -- lifecycle --------------------------------------------------------------------------
    def _parallel(self, fn: Callable[[int], T], indexes: Sequence[int]) -> list[T]:
        if len(indexes) <= 1:
            return [fn(i) for i in indexes]
        with ThreadPoolExecutor(len(indexes)) as pool:
            return list(pool.map(fn, indexes))

    def _start_epmd(self) -> None:
        with open(self.base / "epmd.log", "ab") as log:
            self.epmd = subprocess.Popen(
                [EPMD, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(lambda: port_open(self.epmd_port), 10, f"private epmd on {self.epmd_port}", 0.05)

    def start(self) -> float:
        """Start epmd and node 0, then the other nodes at once (they join node 0 as they
        boot), wait until every node sees all of them running. Returns the seconds it took.
        Cleans up if it fails. Node 0 boots alone first: a node that joined it while it was
        still enabling its feature flags (a fresh node's first boot) failed its schema check
        (`table_attributes_mismatch` on `rabbit_user`: `limits`, seen once on a loaded
        machine)."""
        atexit.register(self.cleanup)  # a crash of the test process must not leave nodes
        started = time.monotonic()
        try:
            self._start_epmd()
            first = self.nodes[0].start()
            boots = [
                first,
                *self._parallel(lambda i: self.nodes[i].start(), range(1, len(self.nodes))),
            ]
            self.timings.update({f"boot_n{i}": t for i, t in enumerate(boots)})
            self.timings["boot"] = time.monotonic() - started
            rest = range(1, len(self.nodes))
            # a node that did not join by itself (node 0 did not answer within its discovery
            # retries and it booted standalone) is joined with rabbitmqctl
            views = self._parallel(self.running_nodes, range(len(self.nodes)))
            strays = [i for i in rest if self.nodes[i].node not in views[0]]
            if strays:
                t = time.monotonic()
                self._join(strays)
                self.timings["join"] = time.monotonic() - t
            if strays or any(v != views[0] or len(v) < len(self.nodes) for v in views):
                self.wait_running(timeout=self.boot_timeout)
        except BaseException:
            print(self.log(), flush=True)
            self.cleanup()
            raise
        self.boot_seconds = time.monotonic() - started
        self.timings["total"] = self.boot_seconds
        return self.boot_seconds

    def _join(self, indexes: Sequence[int]) -> None:
        """Join nodes to node 0 with rabbitmqctl stop_app, join_cluster, start_app."""
        seed = self.nodes[0].node
        self._parallel(lambda i: self.rabbitmqctl(i, "stop_app"), indexes)
        for i in indexes:  # one at a time: each join changes the cluster's schema
            self.rabbitmqctl(i, "reset")  # a standalone node's own data would be refused
            self.rabbitmqctl(i, "join_cluster", seed)
        self._parallel(
            lambda i: self.rabbitmqctl(i, "start_app", timeout=self.boot_timeout), indexes
        )
        for i in indexes:
            port, name = self.nodes[i].port, self.nodes[i].node
            wait_until(lambda p=port: amqp_handshake(p), self.boot_timeout, f"AMQP on {name}")

    def kill9(self, i: int) -> None:
        """kill -9 node ``i`` (beam and its helpers, no shutdown)."""
        self.nodes[i].kill9()

    def stop_node(self, i: int) -> None:
        """A graceful stop (SIGTERM) of node ``i``."""
        self.nodes[i].stop()

    def start_node(self, i: int, wait: bool = True) -> float:
        """(Re)start node ``i`` on its data dir: it rejoins its cluster by itself. With ``wait``,
        returns once every live node sees it running. Returns the seconds it took."""
        started = time.monotonic()
        self.nodes[i].start()
        if wait:
            self.wait_running(timeout=self.boot_timeout)
        return time.monotonic() - started

    def heal(self) -> None:
        """Every node running in one cluster again: paused nodes resumed, killed or stopped
        ones restarted (at once: after a whole-cluster kill they wait for each other)."""
        for i, node in enumerate(self.nodes):
            if node.paused:
                self.resume(i)
        down = [i for i, node in enumerate(self.nodes) if not node.alive()]
        self._parallel(lambda i: self.nodes[i].start(), down)
        self.wait_running(list(range(len(self.nodes))), timeout=self.boot_timeout)

    def pause(self, i: int) -> None:
        """SIGSTOP node ``i``: its connections stay open, nothing moves."""
        self.nodes[i].pause()

    def resume(self, i: int) -> None:
        self.nodes[i].resume()

    def cleanup(self) -> None:
        """kill -9 every process of the cluster (nodes, then epmd) and remove the temp dir.
        Idempotent; also registered with atexit."""
        if self._closed:
            return
        self._closed = True
        atexit.unregister(self.cleanup)
        for node in self.nodes:
            if node.proc is not None:
                node._signal(signal.SIGKILL)  # also reaches a SIGSTOPped group
                try:
                    node.proc.wait(15)
                except subprocess.TimeoutExpired:
                    pass
        if self.epmd is not None:
            try:
                os.killpg(self.epmd.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.epmd.wait(10)
        self._kill_strays()
        shutil.rmtree(self.base, ignore_errors=True)

    def leftovers(self) -> list[int]:
        """Pids of the processes that have this cluster's temp dir (unique) in their command
        line or environment (HOME): beam, its helpers, an ``epmd -daemon`` it might spawn."""
        mark = f"{self.base}/".encode()
        me = os.getpid()
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == me:
                continue
            try:
                data = (proc / "cmdline").read_bytes() + b"\0" + (proc / "environ").read_bytes()
            except OSError:
                continue
            if mark in data:
                pids.append(int(proc.name))
        return pids

    def _kill_strays(self) -> None:
        """Belt and braces: none expected after the process groups are killed."""
        for pid in self.leftovers():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> PrivateRabbitCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # -- rabbitmqctl ------------------------------------------------------------------------
    def rabbitmqctl(self, i: int, *args: str, timeout: float = 90.0) -> str:
        """``rabbitmqctl -n <node i> -q args...`` with the cluster's cookie and epmd."""
        return self.nodes[i].ctl(*args, timeout=timeout)

    def rpc(self, i: int, expr: str, timeout: float = 30.0) -> Any:
        """Evaluate the Erlang expression ``expr`` on node ``i`` (through erl_call, with the
        cluster's cookie and epmd) and return its value, which must be JSON-encodable
        (rabbit_json: maps, lists, binaries, atoms, numbers)."""
        wrapped = f"binary_to_list(base64:encode(rabbit_json:encode(begin {expr} end))).\n"
        r = subprocess.run(
            [ERL_CALL, "-sname", self.nodes[i].node, "-timeout", str(int(timeout)), "-e"],
            input=wrapped.encode(),
            env=self.nodes[i].env(),
            capture_output=True,
            timeout=timeout + 5,
        )
        out = r.stdout.decode(errors="replace").strip()
        m = re.fullmatch(r'\{ok,\s*"([A-Za-z0-9+/=]*)"\}', out)
        if r.returncode != 0 or m is None:
            err = r.stderr.decode(errors="replace")[-300:]
            raise RuntimeError(f"rpc on node {i}: {expr!r}: {out[-300:]} {err}")
        return json.loads(base64.b64decode(m.group(1)))

    def _via(self, via: int | None) -> int:
        if via is not None:
            return via
        live = self.live()
        if not live:
            raise RuntimeError("no live node to ask")
        return live[0]

    def cluster_status(self, via: int | None = None) -> dict[str, Any]:
        """``rabbitmqctl cluster_status`` as a dict (slow: a CLI call)."""
        out = self.rabbitmqctl(self._via(via), "cluster_status", "--formatter", "json")
        return json.loads(out)  # type: ignore[no-any-return]

    def running_nodes(self, via: int | None = None) -> list[str]:
        """The running nodes of the cluster as node ``via`` (default: the first live) sees it."""
        return sorted(self.rpc(self._via(via), "rabbit_nodes:all_running()"))

    def wait_running(
        self, expected: Sequence[int] | None = None, timeout: float = 120.0
    ) -> list[str]:
        """Wait until every node of ``expected`` (default: every live node) sees exactly the
        ``expected`` nodes running in its cluster."""
        idx = list(self.live() if expected is None else expected)
        want = sorted(self.nodes[i].node for i in idx)

        def check() -> bool:
            return all(self.running_nodes(i) == want for i in idx)

        wait_until(check, timeout, f"running nodes {want}", 0.2)
        return want

    # -- queues -----------------------------------------------------------------------------
    def queues(
        self, vhost: str = "/", via: int | None = None, messages: bool = False
    ) -> list[dict[str, Any]]:
        """name, type, leader, members and online (the members whose replica runs) of every
        queue of ``vhost``, as node ``via`` sees them; with ``messages``, the message count
        too (asked of each queue's leader; it waits up to 5 s on a leader that is gone)."""
        vh = vhost.replace("\\", "\\\\").replace('"', '\\"')
        stat = ", messages => element(2, rabbit_amqqueue:stat(Q))" if messages else ""
        expr = (
            "[begin"
            " Items = case amqqueue:get_type(Q) of"
            " rabbit_classic_queue -> [type]; _ -> [type, leader, members, online] end,"
            " maps:merge(maps:from_list(rabbit_amqqueue:info(Q, Items)),"
            f" #{{name => element(4, amqqueue:get_name(Q)){stat}}})"
            f' end || Q <- rabbit_amqqueue:list(<<"{vh}">>)]'
        )
        return self.rpc(self._via(via), expr)  # type: ignore[no-any-return]

    def leaders(self, vhost: str = "/", via: int | None = None) -> dict[str, str]:
        """{queue name: its leader's node name} for the quorum queues of ``vhost``."""
        return {q["name"]: q["leader"] for q in self.queues(vhost, via) if q["type"] == "quorum"}

    def log(self) -> str:
        return "\n".join(f"=== node {i} {n.node}\n{n.log()}" for i, n in enumerate(self.nodes))


QUORUM_ARGS = {"x-queue-type": "quorum", "x-queue-leader-locator": "client-local"}


async def declare_spread_quorum_queues(
    cluster: PrivateRabbitCluster,
    names: Sequence[str],
    vhost: str = "",
    arguments: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> dict[str, str]:
    """Declare durable quorum queues, queue k while connected to live node k mod N with
    ``x-queue-leader-locator: client-local`` (RabbitMQ 3.10 knows client-local and balanced),
    so their leaders start spread over the nodes. Returns {queue: leader node name} once every
    queue has a leader among the members."""
    live = cluster.live()
    conns = [await aio_pika.connect(cluster.url(i, vhost), timeout=30) for i in live]
    try:
        for k, name in enumerate(names):
            channel = await conns[k % len(conns)].channel()
            await channel.declare_queue(
                name, durable=True, arguments={**QUORUM_ARGS, **(arguments or {})}
            )
            await channel.close()
    finally:
        for c in conns:
            await c.close()

    def leaders() -> dict[str, str] | None:
        found = cluster.leaders(vhost or "/", via=live[0])
        if all(found.get(n, "") in {cluster.node_name(i) for i in live} for n in names):
            return {n: found[n] for n in names}
        return None

    return await asyncio.to_thread(wait_until, leaders, timeout, f"leaders of {list(names)}")


async def publish_confirmed(
    url: str, bodies: dict[str, Sequence[bytes]], timeout: float = 30.0
) -> dict[str, list[bytes]]:
    """Publish persistent messages to queues (default exchange, mandatory) through one
    connection with publisher confirms; returns what was confirmed, per queue. A nack, a
    return or a timeout raises."""
    async with await aio_pika.connect(url, timeout=30) as conn:
        channel = await conn.channel(publisher_confirms=True, on_return_raises=True)

        async def one(queue: str, body: bytes) -> bytes:
            msg = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            confirm = await channel.default_exchange.publish(
                msg, routing_key=queue, mandatory=True, timeout=timeout
            )
            assert isinstance(confirm, aiormq.spec.Basic.Ack), f"{queue}: {confirm!r}"
            return body

        out: dict[str, list[bytes]] = {}
        for queue, items in bodies.items():
            out[queue] = list(await asyncio.gather(*(one(queue, b) for b in items)))
        return out


async def drain(url: str, queue: str, count: int, timeout: float = 60.0) -> list[bytes]:
    """Consume and ack ``count`` messages of ``queue`` through ``url`` within ``timeout``;
    returns the bodies in delivery order. (Whether more are left: ``cluster.queues()``.)"""
    got: list[bytes] = []
    if count <= 0:
        return got
    async with await aio_pika.connect(url, timeout=30) as conn:
        channel = await conn.channel()
        await channel.set_qos(prefetch_count=200)
        q = await channel.declare_queue(queue, passive=True)
        async with asyncio.timeout(timeout), q.iterator() as it:
            async for message in it:
                got.append(message.body)
                await message.ack()
                if len(got) >= count:
                    break
    return got


@pytest.fixture(scope="module")
def rabbit_cluster_module() -> Iterator[PrivateRabbitCluster]:
    """A private 3-node RabbitMQ cluster for one test module (booted once, removed after the
    module, whatever happened). Skips loudly (fails under CI=true) without RabbitMQ."""
    cluster = PrivateRabbitCluster(nodes=3)
    with cluster:
        yield cluster
    assert not cluster.base.exists(), f"{cluster.base} left behind"
    assert not cluster.leftovers(), f"processes left behind: {cluster.leftovers()}"


@pytest.fixture
def rabbit_cluster(rabbit_cluster_module: PrivateRabbitCluster) -> PrivateRabbitCluster:
    """The module's private cluster, healed at the start of every test: all nodes running in
    one cluster (whatever an earlier test killed, stopped or paused is back)."""
    rabbit_cluster_module.heal()
    return rabbit_cluster_module
