"""The private 3-node RabbitMQ cluster of tests/support/private_rabbit_cluster.py: it forms one
cluster of its own, quorum queues get their leaders spread over the nodes, a kill -9 of a
leader loses no confirmed message (a new leader takes over, consumed through another node), and
the killed node comes back into the cluster by itself. Then a frozen (SIGSTOP) follower does not
stop confirms, and it catches up when resumed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from collections import Counter

import pytest

from tests.support.private_rabbit_cluster import (
    EPMD,
    PrivateRabbitCluster,
    declare_spread_quorum_queues,
    drain,
    publish_confirmed,
    wait_until,
)

pytestmark = [pytest.mark.scaled, pytest.mark.timeout(600)]

QUEUES = [f"cq{k}" for k in range(4)]
PER_QUEUE = 200


def bodies(queues: list[str], n: int, tag: str) -> dict[str, list[bytes]]:
    return {q: [f"{q}:{tag}:{i}".encode() for i in range(n)] for q in queues}


def test_private_cluster_is_apart_from_the_shared_node(
    rabbit_cluster: PrivateRabbitCluster,
) -> None:
    c = rabbit_cluster
    print(f"cluster boot: {c.timings}")
    want = sorted(c.node_name(i) for i in range(len(c)))
    assert len(c) == 3 and len(set(want)) == 3
    # every node sees the same three running nodes: one cluster
    assert c.wait_running(timeout=60) == want
    ports = {n.port for n in c.nodes} | {n.dist_port for n in c.nodes} | {c.epmd_port}
    assert len(ports) == 7 and ports.isdisjoint({4369, 5672, 25672})
    assert all(n.dist_port != n.port + 20000 for n in c.nodes)
    # the nodes are registered with the cluster's own epmd, none with the system's
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    ours = subprocess.run(
        [EPMD, "-port", str(c.epmd_port), "-names"], env=env, capture_output=True, text=True
    ).stdout
    system = subprocess.run([EPMD, "-names"], env=env, capture_output=True, text=True).stdout
    for name in want:
        short = name.split("@")[0]
        assert f"name {short} " in ours
        assert short not in system


def test_kill9_of_a_quorum_queue_leader_loses_no_confirmed_message(
    rabbit_cluster: PrivateRabbitCluster,
) -> None:
    c = rabbit_cluster
    everyone = c.wait_running(timeout=60)

    # 4 quorum queues, declared through node k mod 3 with client-local: leaders spread
    t = time.monotonic()
    leaders = asyncio.run(declare_spread_quorum_queues(c, QUEUES))
    print(f"leaders {leaders} in {time.monotonic() - t:.1f}s")
    assert len(set(leaders.values())) >= 2, leaders
    members = {q["name"]: q["members"] for q in c.queues()}
    assert all(sorted(members[q]) == everyone for q in QUEUES), members

    # publish with confirms through node 0
    confirmed = asyncio.run(publish_confirmed(c.url(0), bodies(QUEUES, PER_QUEUE, "before")))

    # kill -9 a node that leads a queue (not node 0: the publisher's node stays up)
    victim_name = next(n for n in leaders.values() if n != c.node_name(0))
    victim = c.index(victim_name)
    led = [q for q, n in leaders.items() if n == victim_name]
    t = time.monotonic()
    c.kill9(victim)
    survivors = sorted(c.node_name(i) for i in c.live())

    def new_leaders() -> dict[str, str] | None:
        now = c.leaders(via=0)
        return now if all(now.get(q) in survivors for q in led) else None

    moved = wait_until(new_leaders, 60, f"a new leader for {led} after kill -9 {victim_name}")
    print(f"killed {victim_name}; new leaders {moved} after {time.monotonic() - t:.1f}s")
    assert c.wait_running(timeout=60) == survivors

    # two of three nodes are a quorum: confirms go on through node 0
    during = asyncio.run(publish_confirmed(c.url(0), bodies(led, 50, "during")))
    for q, items in during.items():
        confirmed[q] += items

    # every confirmed message is there, once, consumed through another surviving node
    via = next(i for i in c.live() if i != 0)

    async def consume_all() -> dict[str, list[bytes]]:
        got = await asyncio.gather(*(drain(c.url(via), q, len(confirmed[q])) for q in QUEUES))
        return dict(zip(QUEUES, got, strict=True))

    got = asyncio.run(consume_all())
    for q in QUEUES:
        assert Counter(got[q]) == Counter(confirmed[q]), q

    def empty() -> bool:
        qs = c.queues(via=via, messages=True)
        return all(q["messages"] == 0 for q in qs if q["name"] in QUEUES)

    wait_until(empty, 60, "no message left in the queues (no duplicates)", 1.0)

    # the killed node restarts on its data dir and rejoins by itself
    took = c.start_node(victim)
    print(f"{victim_name} back in {took:.1f}s")
    assert c.wait_running(timeout=60) == everyone
    assert c.running_nodes(victim) == everyone

    def all_online() -> bool:
        qs = {q["name"]: q for q in c.queues(via=victim)}
        return all(sorted(qs[q]["online"]) == everyone for q in QUEUES)

    wait_until(all_online, 60, f"{victim_name} back online in every queue")


def test_a_frozen_follower_does_not_stop_confirms(rabbit_cluster: PrivateRabbitCluster) -> None:
    c = rabbit_cluster
    everyone = c.wait_running(timeout=60)
    leaders = c.leaders(via=0)
    queue = QUEUES[0]
    frozen = next(
        i for i in range(1, len(c)) if c.node_name(i) != leaders[queue]
    )  # neither the publisher's node nor the queue's leader
    c.pause(frozen)
    try:
        sent = asyncio.run(publish_confirmed(c.url(0), bodies([queue], 100, "frozen")))
    finally:
        c.resume(frozen)
    got = asyncio.run(drain(c.url(frozen), queue, len(sent[queue])))
    assert Counter(got) == Counter(sent[queue])
    assert c.wait_running(timeout=60) == everyone
