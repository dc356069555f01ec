"""The history shards' configuration the whole cluster shares: how many shards, and whether
sends are paused while ``python -m services reshard`` changes that count.

The database holds it (table ``cluster_config``); the first process of a new database writes
``CHAT_HISTORY_SHARDS`` there. Changes are announced on ``chat.events`` (key
``config.history``); every gateway and writer binds that key and reads the table at start.
``epoch`` grows with every change, so an older announcement never undoes a newer one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import orjson
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import OperationalError

from services.common import topology
from services.common.ids import now_ms
from services.common.models import ClusterConfig

CONFIG_KEY = "config.history"  # on chat.events: a change
ACK_KEY = "config.ack"  # on chat.events: a gateway has applied a pause


@dataclass(frozen=True)
class HistoryConfig:
    shards: int
    paused: bool = False
    epoch: int = 0

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "type": "history_config",
                "shards": self.shards,
                "paused": self.paused,
                "epoch": self.epoch,
            }
        )

    def event(self) -> tuple[str, str, bytes]:
        return topology.EVENTS, CONFIG_KEY, self.body()

    @classmethod
    def parse(cls, doc: dict[str, object]) -> HistoryConfig:
        shards, paused, epoch = doc["shards"], doc["paused"], doc["epoch"]
        if not isinstance(shards, int) or isinstance(shards, bool) or not 1 <= shards <= 1024:
            raise ValueError("shards must be an integer from 1 to 1024")
        if not isinstance(paused, bool) or not isinstance(epoch, int):
            raise ValueError("paused must be a boolean and epoch an integer")
        return cls(shards, paused, epoch)


def load(engine: Engine, default_shards: int) -> HistoryConfig:
    """The current configuration; a new database gets ``default_shards`` (processes starting
    together: the first insert wins, the others' are ignored; a deadlock is retried)."""
    for attempt in range(5):
        try:
            return _load(engine, default_shards)
        except OperationalError:
            if attempt == 4:
                raise
            time.sleep(0.1 * (attempt + 1))
    raise AssertionError("unreachable")


def _read(engine: Engine) -> dict[str, str]:
    with engine.begin() as conn:
        return dict(conn.execute(select(ClusterConfig.key, ClusterConfig.value)).tuples().all())


def _load(engine: Engine, default_shards: int) -> HistoryConfig:
    rows = _read(engine)
    if "history_shards" not in rows:
        with engine.begin() as conn:
            ignore = "OR IGNORE" if conn.dialect.name == "sqlite" else "IGNORE"
            ms = now_ms()
            conn.execute(
                insert(ClusterConfig).prefix_with(ignore),
                [
                    {"key": "history_shards", "value": str(default_shards), "updated_ms": ms},
                    {"key": "history_paused", "value": "0", "updated_ms": ms},
                    {"key": "history_epoch", "value": "0", "updated_ms": ms},
                ],
            )
        # a new transaction: under REPEATABLE READ the first one would not see the row that
        # another process, starting at the same moment, committed first
        rows = _read(engine)
    return HistoryConfig(
        int(rows["history_shards"]),
        rows.get("history_paused") == "1",
        int(rows.get("history_epoch", "0")),
    )


def save(engine: Engine, cfg: HistoryConfig) -> None:
    values = {
        "history_shards": str(cfg.shards),
        "history_paused": "1" if cfg.paused else "0",
        "history_epoch": str(cfg.epoch),
    }
    with engine.begin() as conn:
        for key, value in values.items():
            conn.execute(
                ClusterConfig.__table__.update()  # type: ignore[attr-defined]
                .where(ClusterConfig.key == key)
                .values(value=value, updated_ms=now_ms())
            )
