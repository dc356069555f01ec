"""The batch write itself, on SQLite and MariaDB: one multi-row INSERT, idempotent on the id and
on (sender_id, client_msg_id), rooms' last activity bumped (never lowered) in one statement."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event, select, text
from sqlalchemy.engine import Engine

from services.common.models import Message, Room
from services.history import store
from services.history.store import history_engine
from services.history.wire import Row
from tests.support import services as svc

from .helpers import add_room

ALICE = "u" + "a" * 25
ROOMS = ["r" + str(i).zfill(25) for i in range(5)]


@pytest.fixture(params=svc.BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield request.getfixturevalue("sqlite_engine")
        return
    eng = history_engine(request.getfixturevalue("mysql_url"))
    yield eng
    eng.dispose()


def rows(n: int, tag: str, start_ms: int = 10_000) -> list[Row]:
    return [
        Row(
            f"m{tag}{i:0>20}"[:26],
            ROOMS[i % 5],
            ALICE,
            "alice",
            f"b{i}",
            start_ms + i,
            f"{tag}-{i}",
        )
        for i in range(n)
    ]


def statements(engine: Engine) -> list[tuple[str, bool]]:
    seen: list[tuple[str, bool]] = []

    def hook(conn: Any, cursor: Any, statement: str, params: Any, ctx: Any, many: bool) -> None:
        words = statement.split()
        table = words[words.index("FROM") + 1] if words[0] == "SELECT" else words[1]
        if words[0] == "INSERT":
            table = words[2]
        seen.append((f"{words[0].lower()} {table}", many))

    event.listen(engine, "before_cursor_execute", hook)
    return seen


def test_one_insert_and_one_update_per_batch(engine: Engine) -> None:
    for room in ROOMS:
        add_room(engine, room, [(ALICE, "alice")])
    with engine.begin() as conn:  # one room already newer than the batch: never lowered
        conn.execute(
            text("UPDATE rooms SET last_activity_ms = 99999999 WHERE id = :r"), {"r": ROOMS[4]}
        )
    seen = statements(engine)
    batch = rows(300, "a")
    result = store.write_batch(engine, batch)
    assert len(result.new) == 300 and result.duplicates == 0
    # one DBAPI call per statement: the duplicate check, the INSERT, the search documents'
    # INSERT, the (index-only) look for changes waiting for a message, the rooms' UPDATE
    assert [k for k, _ in seen] == [
        "select messages",
        "insert messages",
        "insert message_search",
        "select message_changes",
        "update rooms",
    ], seen
    with engine.connect() as conn:
        activity = dict(conn.execute(select(Room.id, Room.last_activity_ms)).all())
        assert conn.scalar(select(Message.id).where(Message.id == batch[7].id)) == batch[7].id
    assert activity == {
        ROOMS[0]: 10_295,
        ROOMS[1]: 10_296,
        ROOMS[2]: 10_297,
        ROOMS[3]: 10_298,
        ROOMS[4]: 99999999,
    }
    if engine.dialect.name == "mysql":  # ONE insert statement for 300 rows (+ one for the index)
        with engine.connect() as conn:
            conn.execute(text("FLUSH STATUS"))
            store._insert(conn, rows(300, "b"), store.Written())
            conn.commit()
            status = dict(conn.execute(text("SHOW SESSION STATUS LIKE 'Com_insert'")).all())
        assert status == {"Com_insert": "2"}  # messages, then their search documents


def test_idempotent_on_id_and_on_sender_client_msg_id(engine: Engine) -> None:
    first = rows(10, "c")
    store.write_batch(engine, first)
    again = store.write_batch(engine, first + first[:3])
    assert again.new == [] and again.duplicates == 13
    # another id for an existing (sender_id, client_msg_id): the unique key holds, no new row
    clash = Row("m" + "z" * 25, ROOMS[0], ALICE, "alice", "other", 1, first[0].client_msg_id)
    store.write_batch(engine, [clash])
    with engine.connect() as conn:
        ids = set(conn.scalars(select(Message.id)))
        body = conn.scalar(select(Message.body).where(Message.id == first[0].id))
    assert ids == {r.id for r in first} and body == "b0"
