"""Change the number of history shards of a running cluster: drain, switch, resume.

    python -m services reshard status
    python -m services reshard to 8          # from whatever it is now
    python -m services reshard resume        # after an interrupted run: sends flow again

It uses the services' own settings (``CHAT_DATABASE_URL``, ``CHAT_BROKER_URL``). docs/DEPLOY.md
describes the procedure; in short:

1. **drain**: announce ``paused`` (database and ``config.history`` event). Every gateway stops
   sending messages to history (a ``send`` is answered ``unavailable``: clients retry with the
   same ``client_msg_id``), lets the sends in flight be confirmed, and says so
   (``config.ack``). The tool learns which gateways exist from their presence heartbeats and
   waits for each one's word; then it passes a sync marker through every shard: once each
   writer has answered, every message routed before is committed.
2. **switch**: declare the new shards, announce the new count (still paused), wait until the
   writers have let go of the shards that are gone, and delete those (empty) queues.
3. **resume**: announce ``running`` with the new count. Gateways route by it from then on.

Nothing is lost (every acked message was committed before the switch) and nothing is doubled
(a message's id is derived from its sender and ``client_msg_id``: a retry is the same row).
If the tool stops half way, the cluster stays paused until ``resume``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from typing import Any

import orjson

from services.common import config as cluster_config
from services.common import topology
from services.common.bus import Bus, Delivery, create_bus
from services.common.config import HistoryConfig
from services.common.db import make_engine
from services.common.ids import new_id
from services.common.settings import Settings, load_settings


def say(msg: str) -> None:
    print(f"[reshard {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Resharder:
    def __init__(self, settings: Settings, *, ack_timeout: float = 30.0) -> None:
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        self.bus: Bus = create_bus(settings.broker_url, settings.history_delivery_limit)
        self.id = f"reshard-{new_id()[-8:]}"
        self.ack_timeout = ack_timeout
        self.gateways: set[str] = set()
        self.acks: dict[str, int] = {}  # gateway -> epoch acknowledged
        self.synced: dict[str, set[int]] = {}  # marker -> shards answered

    async def __aenter__(self) -> Resharder:
        await self.bus.connect()
        queue = f"gw.{self.id}"
        await self.bus.private_queue(queue, self._on_delivery)
        await self.bus.bind_many(
            queue,
            [
                (topology.PRESENCE, ""),
                (topology.EVENTS, cluster_config.ACK_KEY),
                (topology.EVENTS, topology.gateway_key(self.id)),
            ],
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.bus.close()
        self.engine.dispose()

    async def _on_delivery(self, d: Delivery) -> None:
        try:
            doc: Any = orjson.loads(d.body)
        except ValueError:
            return
        if d.exchange == topology.PRESENCE:
            if doc.get("kind") != "bye" and isinstance(doc.get("gw"), str):
                self.gateways.add(doc["gw"])
        elif doc.get("type") == "config_ack":
            self.acks[str(doc["gw"])] = int(doc["epoch"])
        elif doc.get("type") == "synced":
            self.synced.setdefault(str(doc["marker"]), set()).add(int(doc.get("shard", 0)))

    def current(self) -> HistoryConfig:
        return cluster_config.load(self.engine, self.settings.history_shards)

    async def announce(self, cfg: HistoryConfig) -> None:
        await asyncio.to_thread(cluster_config.save, self.engine, cfg)
        await self.bus.publish(*cfg.event())

    async def drain(self, cfg: HistoryConfig) -> HistoryConfig:
        """Pause sends everywhere and wait until every shard has committed what it holds."""
        paused = HistoryConfig(cfg.shards, True, cfg.epoch + 1)
        listen = self.settings.presence_heartbeat + 1.5  # every gateway beats in this time
        say(f"pausing sends (epoch {paused.epoch}); listening {listen:.1f}s for gateways")
        await self.announce(paused)
        await asyncio.sleep(listen)
        await self.announce(paused)  # a gateway that started meanwhile hears it too
        deadline = time.monotonic() + self.ack_timeout
        while True:
            waiting = {g for g in self.gateways if self.acks.get(g, -1) < paused.epoch}
            if not waiting:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"gateways did not confirm the pause: {sorted(waiting)}")
            await asyncio.sleep(0.05)
        say(f"{len(self.gateways)} gateways paused; passing a marker through every shard")
        marker = new_id()
        for k in range(cfg.shards):
            body = orjson.dumps({"type": "marker", "marker": marker, "gw": self.id, "shard": k})
            await self.bus.publish(
                topology.MESSAGES, topology.sync_key(k), body, mandatory=True, persistent=True
            )
        deadline = time.monotonic() + 120
        while len(self.synced.get(marker, ())) < cfg.shards:
            if time.monotonic() > deadline:
                raise RuntimeError("the history writers did not pass the marker in 120 s")
            await asyncio.sleep(0.05)
        for k in range(cfg.shards):
            depth = await self.bus.queue_depth(topology.history_queue(k))
            if depth:
                raise RuntimeError(f"shard {k} still holds {depth} messages after the marker")
        say("every shard is committed and empty")
        return paused

    async def switch(self, paused: HistoryConfig, shards: int) -> HistoryConfig:
        old = paused.shards
        await self.bus.declare_history(shards)
        switched = HistoryConfig(shards, True, paused.epoch + 1)
        await self.announce(switched)  # writers let go of the shards that are gone
        for k in range(shards, old):
            await self._delete_when_unused(topology.history_queue(k))
        say(f"{old} -> {shards} shards")
        return switched

    async def _delete_when_unused(self, queue: str, timeout: float = 60.0) -> None:
        from services.common.bus.amqp import AmqpBus

        if not isinstance(self.bus, AmqpBus):
            return
        deadline = time.monotonic() + timeout
        while True:  # quorum queues refuse queue.delete's if-unused: look, then delete
            channel = await self.bus._raw_channel()
            try:
                ok = await channel.queue_declare(queue, passive=True)
                if not ok.consumer_count and not ok.message_count:
                    await channel.queue_delete(queue)
                    return
            finally:
                with contextlib.suppress(Exception):
                    await channel.close()
            if time.monotonic() > deadline:  # a writer still consumes it, or it holds messages
                raise RuntimeError(
                    f"{queue} not deleted: {ok.consumer_count} consumers, {ok.message_count} messages"
                )
            await asyncio.sleep(0.5)

    async def resume(self, cfg: HistoryConfig) -> HistoryConfig:
        running = HistoryConfig(cfg.shards, False, cfg.epoch + 1)
        await self.announce(running)
        say(f"sends resume on {running.shards} shards (epoch {running.epoch})")
        return running

    async def reshard(self, shards: int) -> HistoryConfig:
        cfg = await asyncio.to_thread(self.current)
        if cfg.shards == shards and not cfg.paused:
            say(f"already {shards} shards")
            return cfg
        try:
            paused = await self.drain(cfg)
        except Exception:
            say("drain failed: resuming with the old count")
            await self.resume(await asyncio.to_thread(self.current))
            raise
        switched = await self.switch(paused, shards)
        return await self.resume(switched)


async def amain(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m services reshard")
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("status")
    to = sub.add_parser("to")
    to.add_argument("shards", type=int)
    sub.add_parser("resume")
    args = parser.parse_args(argv)
    settings = load_settings()
    async with Resharder(settings) as r:
        if args.cmd == "status":
            cfg = await asyncio.to_thread(r.current)
            print(orjson.dumps(cfg.__dict__).decode())
        elif args.cmd == "to":
            if not 1 <= args.shards <= 1024:
                parser.error("shards: 1 to 1024")
            await r.reshard(args.shards)
        else:
            await r.resume(await asyncio.to_thread(r.current))
    return 0


def main(argv: list[str]) -> None:
    raise SystemExit(asyncio.run(amain(argv)))
