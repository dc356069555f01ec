"""Migration 0005 on an install with history, on SQLite and MariaDB: the existing messages
become searchable (indexed by the migration), the full-text index is the engine's own (FTS5
with its triggers; InnoDB FULLTEXT without stopwords), and the way back keeps the messages."""

from __future__ import annotations

from alembic import command
from sqlalchemy import text

from services.common.db import make_engine
from services.history.search import search
from services.history.searchtext import parse_query
from tests.auth.test_migrations import config, empty_url  # noqa: F401  (the fixture)

ALICE = "u" + "a" * 25
ROOM = "r" + "m" * 25


def test_existing_messages_are_indexed(empty_url: str) -> None:  # noqa: F811
    url = empty_url
    cfg = config(url)
    command.upgrade(cfg, "0003")
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO users (id, username, password_hash, created_ms, membership_seq) "
                    "VALUES (:u, 'alice', 'x', 1, 1)"
                ),
                {"u": ALICE},
            )
            conn.execute(
                text(
                    "INSERT INTO rooms (id, kind, name, created_ms, last_activity_ms, version, "
                    "member_count) VALUES (:r, 'group', 'g', 1, 1, 1, 1)"
                ),
                {"r": ROOM},
            )
            conn.execute(
                text(
                    "INSERT INTO memberships (room_id, user_id, username, joined_ms) "
                    "VALUES (:r, :u, 'alice', 1)"
                ),
                {"r": ROOM, "u": ALICE},
            )
            for i, body in enumerate(["Xin chào các bạn", "the old release notes", "🎉🎉"]):
                conn.execute(
                    text(
                        "INSERT INTO messages (id, room_id, sender_id, sender, body, sent_ms, "
                        "client_msg_id, written_ms) VALUES (:id, :r, :u, 'alice', :b, :t, :c, 1)"
                    ),
                    {"id": f"m{i:025d}", "r": ROOM, "u": ALICE, "b": body, "t": 1000 + i, "c": i},
                )
        command.upgrade(cfg, "head")
        found = search(engine, ALICE, parse_query("chào"), limit=5).messages
        assert [(m["id"], m["kind"], m["deleted"]) for m in found] == [
            (f"m{0:025d}", "text", False)
        ]
        assert [m["id"] for m in search(engine, ALICE, parse_query("release the")).messages] == [
            f"m{1:025d}"
        ]
        with engine.connect() as conn:
            docs = conn.scalar(text("SELECT COUNT(*) FROM message_search"))
            assert docs == 2  # the emoji-only message has no word to index
            if engine.dialect.name == "sqlite":
                kinds = dict(
                    conn.execute(
                        text("SELECT name, type FROM sqlite_master WHERE name LIKE 'message_%'")
                    )
                    .tuples()
                    .all()
                )
                assert kinds["message_fts"] == "table" and kinds["message_search_ad"] == "trigger"
            else:
                create = conn.execute(text("SHOW CREATE TABLE message_search")).one()[1]
                assert "FULLTEXT KEY `ft_message_search_text`" in create
        command.downgrade(cfg, "0003")
        with engine.connect() as conn:
            assert conn.scalar(text("SELECT COUNT(*) FROM messages")) == 3
    finally:
        engine.dispose()
