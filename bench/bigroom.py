"""Rooms of thousands on the scaled mode (issue 13): what one membership change costs with many
members online, one message to all of them, and a connect with thousands of rooms.

    python -m bench.bigroom '{"members": 10000, "online": 1000, "joins": 30, ...}'

A cluster of its own (auth, 3 gateways, history on the local MariaDB and RabbitMQ). Users,
sessions and rooms are seeded straight into the database (tools/seed.py); every measured step
goes through the public API. The clients run in this process (uvloop), spread over the
gateways.

- joins: members added one by one (then removed) with ``online`` members connected: the
  server's own time (``Server-Timing``), the time until every online member has its
  ``member_joined`` frame, and the bytes every online member received for it;
- fan-out: messages to the group, send -> the last online member's copy;
- connect: one user in ``connect_rooms`` rooms: auth frame -> ``ready``, cold (nothing bound on
  that gateway) and warm.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import websockets

from bench.common import (
    amqp_url,
    create_database,
    create_vhost,
    delete_vhost,
    drop_database,
    log,
    mysql_url,
    raise_nofile,
    summary_ms,
)
from tools.cluster import Cluster
from tools.seed import Seeded, Seeder

ORIGIN = "http://127.0.0.1"


def server_ms(r: httpx.Response) -> float:
    m = re.search(r"dur=([0-9.]+)", r.headers.get("server-timing", ""))
    return float(m.group(1)) if m else float("nan")


class Client:
    """A member's socket: counts what it receives after ``mark()`` (the timeline's notices apart
    from the rest); wakes waiters by kind."""

    def __init__(self, ws: websockets.ClientConnection) -> None:
        self.ws = ws
        self.bytes = 0
        self.notice_bytes = 0
        self.waiters: list[tuple[Any, asyncio.Future[float]]] = []
        self.task = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str, token: str) -> tuple[Client, float, dict[str, Any]]:
        ws = await websockets.connect(url, origin=ORIGIN, max_size=2**24, open_timeout=30)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        await ws.send(orjson.dumps({"type": "auth", "token": token}).decode())
        ready = orjson.loads(await asyncio.wait_for(ws.recv(), 60))
        took = time.perf_counter() - t0
        assert ready["type"] == "ready", ready
        return cls(ws), took, ready

    def mark(self) -> None:
        self.bytes = 0
        self.notice_bytes = 0

    def wait(self, pred: Any) -> asyncio.Future[float]:
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiters.append((pred, fut))
        return fut

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                f = orjson.loads(raw)
                if f.get("type") == "message" and f["message"].get("kind") == "notice":
                    self.notice_bytes += len(raw)
                else:
                    self.bytes += len(raw)
                if not self.waiters:
                    continue
                now = time.perf_counter()
                keep = []
                for pred, fut in self.waiters:
                    if not fut.done() and pred(f):
                        fut.set_result(now)
                    elif not fut.done():
                        keep.append((pred, fut))
                self.waiters = keep
        except websockets.ConnectionClosed:
            pass

    async def close(self) -> None:
        await self.ws.close()
        self.task.cancel()


class BigRoom:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.state = Path(tempfile.mkdtemp(prefix="bench-bigroom-"))
        self.vhost = self.db = ""
        self.cluster: Cluster | None = None
        self.result: dict[str, Any] = {"spec": {k: v for k, v in spec.items() if k != "env"}}

    def start(self) -> None:
        raise_nofile(65536)
        self.vhost, self.db = create_vhost("bigroom"), create_database("bigroom")
        env = {
            "CHAT_LOG_LEVEL": "WARNING",
            "CHAT_SEND_RATE": "1000000",
            "CHAT_SEND_BURST": "1000000",
            "CHAT_ACCESS_TTL": "7200",
            # the group is the size asked for, and the joins come on top of it
            "CHAT_MAX_GROUP_MEMBERS": str(int(self.spec["members"]) + int(self.spec["joins"])),
        }
        env.update(self.spec.get("env", {}))
        self.cluster = Cluster(
            database_url=mysql_url(self.db),
            broker_url=amqp_url(self.vhost),
            gateways=3,
            port=None,
            state=self.state,
            extra_env=env,
        )
        self.cluster.start()

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.db:
            drop_database(self.db)
        if self.vhost:
            delete_vhost(self.vhost)
        shutil.rmtree(self.state, ignore_errors=True)

    def ws_url(self, i: int) -> str:
        assert self.cluster is not None
        gws = self.cluster.gateway_procs
        return gws[i % len(gws)].url.replace("http://", "ws://") + "/ws"

    async def run(self) -> dict[str, Any]:
        assert self.cluster is not None
        s = self.spec
        n, online_n, joins = int(s["members"]), int(s["online"]), int(s["joins"])
        seeder = Seeder(mysql_url(self.db), self.cluster.secret)
        try:
            t0 = time.monotonic()
            people = seeder.users(n + joins + 1, prefix="g")
            log(f"bigroom: {len(people)} users seeded in {time.monotonic() - t0:.1f}s")
            owner, members, joiners = people[0], people[1:n], people[n : n + joins]
            auth = self.cluster.auth.url
            async with httpx.AsyncClient(timeout=300) as http:
                r = await http.post(
                    f"{auth}/api/rooms",
                    json={"name": "everyone", "members": [m.username for m in members]},
                    headers=owner.headers,
                )
                r.raise_for_status()
                room = r.json()["id"]
                self.result["create"] = {"members": n, "server_ms": server_ms(r)}
                log(f"bigroom: group of {n} created ({server_ms(r):.0f} ms server time)")
                clients = await self._connect([owner, *members[: online_n - 1]])
                self.result["online"] = len(clients)
                await asyncio.sleep(float(s.get("settle", 2.0)))  # the relay's creation events
                await self._joins(http, auth, owner, room, joiners, clients)
                await self._fanout(room, clients)
                for c in clients:
                    await c.close()
            await self._connect_many_rooms(seeder)
        finally:
            seeder.close()
        return self.result

    async def _connect(self, users: list[Seeded]) -> list[Client]:
        sem = asyncio.Semaphore(64)
        t0 = time.monotonic()

        async def one(i: int, u: Seeded) -> Client:
            async with sem:
                c, _, _ = await Client.connect(self.ws_url(i), u.access_token)
                return c

        clients = list(await asyncio.gather(*(one(i, u) for i, u in enumerate(users))))
        log(f"bigroom: {len(clients)} clients connected in {time.monotonic() - t0:.1f}s")
        return clients

    async def _joins(
        self,
        http: httpx.AsyncClient,
        auth: str,
        owner: Seeded,
        room: str,
        joiners: list[Seeded],
        clients: list[Client],
    ) -> None:
        server: list[float] = []
        reached: list[float] = []
        per_member: list[float] = []
        notice_per_member: list[float] = []
        for event, notice, method in (
            ("member_joined", "joined", "post"),
            ("member_left", "removed", "delete"),
        ):
            for u in joiners:
                for c in clients:
                    c.mark()
                waits = [
                    c.wait(
                        lambda f, e=event, name=u.username: (
                            f.get("event") == e and f.get("username") == name
                        )
                    )
                    for c in clients
                ]
                notices = [  # the change's notice in the timeline (API.md "Notices")
                    c.wait(
                        lambda f, e=notice, name=u.username: (
                            f.get("type") == "message"
                            and (f["message"].get("notice") or {}).get("event") == e
                            and f["message"]["notice"].get("username") == name
                        )
                    )
                    for c in clients
                ]
                t0 = time.perf_counter()
                if method == "post":
                    r = await http.post(
                        f"{auth}/api/rooms/{room}/members",
                        json={"username": u.username},
                        headers=owner.headers,
                    )
                else:
                    r = await http.delete(
                        f"{auth}/api/rooms/{room}/members/{u.username}", headers=owner.headers
                    )
                r.raise_for_status()
                done = await asyncio.wait_for(asyncio.gather(*waits), 60)
                await asyncio.wait_for(asyncio.gather(*notices), 60)
                server.append(server_ms(r) / 1000)
                reached.append(max(done) - t0)
                per_member.append(sum(c.bytes for c in clients) / len(clients))
                notice_per_member.append(sum(c.notice_bytes for c in clients) / len(clients))
        self.result["joins"] = {
            "changes": len(server),
            "server": summary_ms(server),
            "all_members_told": summary_ms(reached),
            "bytes_per_member_per_change": {
                "mean": round(sum(per_member) / len(per_member), 1),
                "max": round(max(per_member), 1),
            },
            "notice_bytes_per_member_per_change": {
                "mean": round(sum(notice_per_member) / len(notice_per_member), 1),
                "max": round(max(notice_per_member), 1),
            },
        }
        log(f"bigroom: joins {self.result['joins']}")

    async def _fanout(self, room: str, clients: list[Client]) -> None:
        sender, rest = clients[0], clients[1:]
        lat: list[float] = []
        for i in range(int(self.spec["fanout_messages"])):
            cmid = str(uuid.uuid4())
            waits = [
                c.wait(
                    lambda f, m=cmid: (
                        f.get("type") == "message" and f["message"]["client_msg_id"] == m
                    )
                )
                for c in rest
            ]
            acked = sender.wait(
                lambda f, m=cmid: f.get("type") == "ack" and f.get("client_msg_id") == m
            )
            t0 = time.perf_counter()
            frame = {
                "type": "send",
                "room": room,
                "body": f"to everyone {i}",
                "client_msg_id": cmid,
            }
            await sender.ws.send(orjson.dumps(frame).decode())
            await asyncio.wait_for(acked, 30)
            done = await asyncio.wait_for(asyncio.gather(*waits), 60)
            lat.append(max(done) - t0)
            await asyncio.sleep(1 / float(self.spec.get("fanout_rate", 2)))
        self.result["fanout"] = {
            "members_online": len(clients),
            "messages": len(lat),
            "send_to_last_member": summary_ms(lat),
        }
        log(f"bigroom: fan-out {self.result['fanout']}")

    async def _connect_many_rooms(self, seeder: Seeder) -> None:
        k = int(self.spec["connect_rooms"])
        people = seeder.users(k + 1, prefix="c")
        me, others = people[0], people[1:]
        seeder.rooms([[me, o] for o in others], name="pair")
        times: dict[str, list[float]] = {"cold": [], "warm": [], "cold_synced": []}
        rooms = 0
        for g in range(3):  # a gateway where none of them is bound, then again (bound)
            for kind in ("cold", "warm"):
                t0 = time.perf_counter()
                c, took, ready = await Client.connect(self.ws_url(g), me.access_token)
                rooms = len(ready["rooms"])
                times[kind].append(took)
                if kind == "cold":  # and until every room is bound here: "synced"
                    synced = await asyncio.wait_for(c.wait(lambda f: f["type"] == "synced"), 60)
                    times["cold_synced"].append(synced - t0)
                if kind == "warm":
                    await c.close()
                else:
                    cold = c  # keep it: its rooms stay bound for the warm connect
            await cold.close()
        self.result["connect"] = {
            "rooms": rooms,
            "cold": summary_ms(times["cold"]),
            "cold_synced": summary_ms(times["cold_synced"]),
            "warm": summary_ms(times["warm"]),
        }
        log(f"bigroom: connect {self.result['connect']}")


def main() -> None:
    spec = json.loads(sys.argv[1])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    bench = BigRoom(spec)
    try:
        bench.start()
        result = asyncio.run(bench.run())
    finally:
        bench.stop()
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
