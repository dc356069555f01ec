"""Edits, deletes and notices as the history writer stores them, on SQLite and on MariaDB:
applied once in queue order, the search index kept in step in the same transaction, a deleted
body gone from the row and from the full-text index, changes that arrive before their message
kept and applied when it lands."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import Engine

from services.common import events
from services.common.ids import change_id, notice_id
from services.common.models import FTS5_TABLE, Message, MessageChange, MessageSearch
from services.history import store
from services.history.searchtext import boolean_mode, fts5_query, parse_query
from services.history.wire import Change, Entry, Row, decode
from tests.support import services as svc

from .helpers import add_room, change_doc, history_engine_for, single, wire

ALICE, BOB, OWNER = "u" + "a" * 25, "u" + "b" * 25, "u" + "o" * 25
ROOM, OTHER = "r" + "c" * 25, "r" + "d" * 25


@pytest.fixture(params=svc.BACKENDS)
def engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    with history_engine_for(request) as eng:
        add_room(eng, ROOM, [(ALICE, "alice"), (BOB, "bob"), (OWNER, "olga")], owner=OWNER)
        add_room(eng, OTHER, [(ALICE, "alice")])
        yield eng


def message(cmid: str, body: str, *, room: str = ROOM, sender: str = ALICE, ms: int = 0) -> Row:
    key, raw, _ = wire(room, sender, cmid, body=body, sent_ms=ms or 1_760_000_000_000)
    item = decode(raw, key)
    assert isinstance(item, Row)
    return item


def change(
    kind: str, msg: Row, actor: str, cmid: str, body: str | None = None, at: int = 5
) -> Change:
    key, raw = single(change_doc(kind, msg.room_id, msg.id, actor, cmid, body=body, at_ms=at))
    item = decode(raw, key)
    assert isinstance(item, Change), item
    return item


def stored(engine: Engine, message_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(Message).where(Message.id == message_id)).one()


def full_text_ids(engine: Engine, q: str) -> set[str]:
    """The full-text index itself (not the search API): the ids whose document matches."""
    terms = parse_query(q)
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            sql = (
                f"SELECT s.message_id FROM {FTS5_TABLE} JOIN message_search s "
                f"ON s.FTS_DOC_ID = {FTS5_TABLE}.rowid WHERE {FTS5_TABLE} MATCH :q"
            )
            return set(conn.scalars(text(sql), {"q": fts5_query(terms)}))
        sql = (
            "SELECT message_id FROM message_search WHERE MATCH (text) AGAINST (:q IN BOOLEAN MODE)"
        )
        return set(conn.scalars(text(sql), {"q": boolean_mode(terms)}))


def statuses(result: store.Written) -> list[str]:
    return [s for _, s in result.changes]


def test_edit_sets_body_and_edited_ms_and_reindexes(engine: Engine) -> None:
    m = message("e1", "the first draft about giraffes")
    store.write_batch(engine, [m])
    assert full_text_ids(engine, "giraffes") == {m.id}
    result = store.write_batch(engine, [change("edit", m, ALICE, "fix-1", "now about zebras", 777)])
    assert statuses(result) == ["applied"]
    row = stored(engine, m.id)
    assert (row.body, row.edited_ms, row.deleted) == ("now about zebras", 777, False)
    assert full_text_ids(engine, "zebras") == {m.id}
    assert full_text_ids(engine, "giraffes") == set()  # the old words left the index


def test_a_retried_edit_changes_nothing_twice(engine: Engine) -> None:
    """Edit A, then edit B, then A again (redelivered, or the client's retry with the same
    client_msg_id): the message keeps B, and each change is recorded once."""
    m = message("e2", "original")
    a = change("edit", m, ALICE, "edit-a", "version A", 10)
    b = change("edit", m, ALICE, "edit-b", "version B", 20)
    store.write_batch(engine, [m, a])
    store.write_batch(engine, [b])
    again = store.write_batch(engine, [a, a])  # twice more, one of them in the same batch
    assert statuses(again) == ["duplicate", "duplicate"]
    row = stored(engine, m.id)
    assert (row.body, row.edited_ms) == ("version B", 20)
    with engine.connect() as conn:
        ids = list(conn.scalars(select(MessageChange.id).order_by(MessageChange.seq)))
    assert ids == [change_id(ALICE, "edit-a"), change_id(ALICE, "edit-b")]
    assert full_text_ids(engine, "version") == {m.id}
    assert full_text_ids(engine, "a") == set() and full_text_ids(engine, "b") == {m.id}


def test_delete_removes_the_body_from_the_row_and_the_index(engine: Engine) -> None:
    m = message("d1", "my secret pineapple recipe")
    keep = message("d2", "pineapple for everyone", ms=1_760_000_000_001)
    store.write_batch(engine, [m, keep])
    result = store.write_batch(engine, [change("delete", m, ALICE, "del-1", at=999)])
    assert statuses(result) == ["applied"]
    row = stored(engine, m.id)
    assert (row.body, row.deleted, row.deleted_ms) == (None, True, 999)
    with engine.connect() as conn:
        assert (
            conn.scalar(select(MessageSearch.text).where(MessageSearch.message_id == m.id)) is None
        )
        # nowhere in the stored text of the message tables (not only hidden)
        for table, column in (("messages", "body"), ("message_search", "text")):
            hits = conn.scalar(text(f"SELECT COUNT(*) FROM {table} WHERE {column} LIKE '%secret%'"))
            assert hits == 0, table
        if engine.dialect.name == "sqlite":  # the FTS5 index's own vocabulary
            conn.execute(
                text(f"CREATE VIRTUAL TABLE temp.vocab USING fts5vocab(main, {FTS5_TABLE}, row)")
            )
            terms = set(conn.scalars(text("SELECT term FROM temp.vocab")))
            assert "secret" not in terms and "recipe" not in terms and "pineapple" in terms
    assert full_text_ids(engine, "secret") == set()
    assert full_text_ids(engine, "pineapple") == {keep.id}


def test_edit_or_delete_after_delete_is_moot(engine: Engine) -> None:
    m = message("d3", "soon gone")
    store.write_batch(engine, [m, change("delete", m, ALICE, "del-3")])
    result = store.write_batch(
        engine,
        [change("edit", m, ALICE, "late-edit", "back?"), change("delete", m, ALICE, "del-4")],
    )
    assert statuses(result) == ["moot", "moot"]
    row = stored(engine, m.id)
    assert row.body is None and row.deleted and full_text_ids(engine, "back") == set()


def test_authorization_is_checked_again_when_applied(engine: Engine) -> None:
    """The gateway authorizes; the writer refuses what it finds wrong anyway: another user's
    edit, a non-owner's delete. The owner may delete anyone's message of a group."""
    m = message("z1", "alice wrote this")
    other = message("z2", "elsewhere", room=OTHER)
    store.write_batch(engine, [m, other])
    result = store.write_batch(
        engine,
        [
            change("edit", m, BOB, "bob-edit", "bob was here"),
            change("delete", m, BOB, "bob-del"),
            Change(
                change_id(ALICE, "wrong-room"), "edit", other.id, ROOM, ALICE, "wrong-room", 1, "x"
            ),
        ],
    )
    assert statuses(result) == ["refused", "refused", "refused"]
    assert stored(engine, m.id).body == "alice wrote this"
    assert stored(engine, other.id).body == "elsewhere"
    result = store.write_batch(engine, [change("delete", m, OWNER, "owner-del")])
    assert statuses(result) == ["applied"] and stored(engine, m.id).deleted


def test_a_change_before_its_message_waits_for_it(engine: Engine) -> None:
    """An edit and a delete that arrive before their messages (e.g. written by another shard
    layout during a reshard) are kept and applied, in order, by the write that stores the
    message; a waiting delete erases a waiting edit's text at once."""
    m1, m2 = message("p1", "first text"), message("p2", "second text")
    e1 = change("edit", m1, ALICE, "early-edit", "edited early", 50)
    e2 = change("edit", m2, ALICE, "early-edit-2", "private words", 51)
    d2 = change("delete", m2, ALICE, "early-del-2", at=52)
    result = store.write_batch(engine, [e1, e2, d2])
    assert statuses(result) == ["pending", "pending", "pending"]
    with engine.connect() as conn:
        texts = conn.execute(
            select(MessageChange.body).where(MessageChange.status == "pending")
        ).scalars()
        assert sorted(t or "" for t in texts) == ["", "", "edited early"]
    again = store.write_batch(engine, [e1])  # redelivered while waiting: still once
    assert statuses(again) == ["duplicate"]
    landed = store.write_batch(engine, [m1, m2])
    assert landed.pending_applied == 3 and len(landed.new) == 2
    one, two = stored(engine, m1.id), stored(engine, m2.id)
    assert (one.body, one.edited_ms) == ("edited early", 50)
    assert (two.body, two.deleted) == (None, True)
    assert full_text_ids(engine, "early") == {m1.id} and full_text_ids(engine, "second") == set()
    with engine.connect() as conn:
        left = conn.execute(select(MessageChange.status, MessageChange.body)).all()
    # the early edit of m2 lost its text to the delete waiting behind it: moot
    assert sorted(s for s, _ in left) == ["applied", "applied", "moot"]
    assert all(b is None for _, b in left)


def test_notices_are_stored_in_order_and_never_indexed(engine: Engine) -> None:
    entry = events.notice_entry(
        ROOM, 7, "removed", username="bob", by="olga", sent_ms=1_760_000_000_500
    )
    key, raw = events.notice_publish(entry, 1)[1:]
    item = decode(raw, key)
    assert isinstance(item, Row) and item.kind == "notice" and item.id == notice_id(ROOM, 7)
    store.write_batch(engine, [item])
    again = store.write_batch(engine, [item])  # the outbox relays it twice: one notice
    assert again.duplicates == 1
    row = stored(engine, item.id)
    assert (row.kind, row.body, row.sender, row.sender_id) == ("notice", None, "olga", ROOM)
    assert orjson.loads(row.notice) == {
        "event": "removed",
        "username": "bob",
        "by": "olga",
        "name": None,
    }
    with engine.connect() as conn:
        assert conn.scalar(select(MessageSearch.message_id)) is None
    refused = store.write_batch(engine, [change("delete", item, OWNER, "del-notice")])
    assert statuses(refused) == ["refused"]


def test_row_by_row_applies_in_order(engine: Engine) -> None:
    """The row-by-row path (a batch with a rejected entry, a suspect redelivery) applies a
    message and its changes in their order, one transaction each."""
    m = message("w1", "one")
    items: list[Entry] = [
        m,
        change("edit", m, ALICE, "w-edit", "two"),
        change("delete", m, ALICE, "w-del"),
    ]
    written, rejected = store.write_each(engine, items)
    assert rejected == [] and statuses(written) == ["applied", "applied"]
    assert stored(engine, m.id).deleted


def test_what_the_gateway_reads_to_authorize_and_answer_retries(engine: Engine) -> None:
    """change_target (authorize an edit/delete), change_status and stored_message (answer a
    retried one without publishing it again)."""
    from services.history.queries import change_target, stored_message

    m = message("g1", "check me")
    assert change_target(engine, ROOM, m.id) is None  # not stored yet
    store.write_batch(engine, [m])
    target = change_target(engine, ROOM, m.id)
    assert target is not None and (target.sender_id, target.owner_id) == (ALICE, OWNER)
    assert target.message["body"] == "check me" and target.message["edited_at"] is None
    assert change_target(engine, OTHER, m.id) is None  # another room's id: not found
    assert store.change_status(engine, ALICE, "g-edit") is None
    store.write_batch(engine, [change("edit", m, ALICE, "g-edit", "checked", 1_760_000_000_123)])
    record = store.change_status(engine, ALICE, "g-edit")
    assert record == store.ChangeRecord(m.id, "edit", "applied", 1_760_000_000_123)
    now = stored_message(engine, m.id)
    assert now is not None and now["body"] == "checked"
    assert now["edited_at"] == "2025-10-09T08:53:20.123Z" and now["deleted"] is False
    assert stored_message(engine, "m" + "0" * 25) is None
