"""Messages people can fix and find: edits, deletes, notices, search, who may add members.

- ``messages``: ``kind`` (``text`` | ``notice``), ``notice`` (its JSON), ``body`` nullable (NULL
  for notices and deleted messages), ``edited_ms``, ``deleted`` and ``deleted_ms``;
- ``rooms.who_can_add`` (``owner`` | ``members``, default ``members``);
- ``message_changes``: every edit and delete once (idempotency, pending changes);
- ``message_search`` and its full-text index: an InnoDB ``FULLTEXT`` index on MariaDB/MySQL
  (created without stopwords), an FTS5 table with triggers on SQLite. Existing text messages
  are indexed here (their folded words, services/history/searchtext.py), before the index is
  built (a bulk build is much faster than row-by-row maintenance).

On MariaDB/MySQL, making ``messages.body`` nullable rebuilds the table: minutes for tens of
millions of rows (run it with the writers stopped or expect them to wait on the table lock).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

from services.history.searchtext import index_text

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(26)
TABLE = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}
BACKFILL_ROWS = 5000

FTS5 = (
    "CREATE VIRTUAL TABLE message_fts USING fts5(text, content='message_search', "
    "content_rowid='FTS_DOC_ID', tokenize=\"unicode61 remove_diacritics 0 tokenchars '_'\")",
    "CREATE TRIGGER message_search_ai AFTER INSERT ON message_search BEGIN "
    "INSERT INTO message_fts(rowid, text) VALUES (new.FTS_DOC_ID, new.text); END",
    "CREATE TRIGGER message_search_ad AFTER DELETE ON message_search BEGIN "
    "INSERT INTO message_fts(message_fts, rowid, text) "
    "VALUES ('delete', old.FTS_DOC_ID, old.text); END",
    "CREATE TRIGGER message_search_au AFTER UPDATE ON message_search BEGIN "
    "INSERT INTO message_fts(message_fts, rowid, text) "
    "VALUES ('delete', old.FTS_DOC_ID, old.text); "
    "INSERT INTO message_fts(rowid, text) VALUES (new.FTS_DOC_ID, new.text); END",
    "INSERT INTO message_fts(message_fts) VALUES ('rebuild')",
)
FULLTEXT = (
    "SET SESSION innodb_ft_enable_stopword = 0",
    "CREATE FULLTEXT INDEX ft_message_search_text ON message_search (text)",
    "SET SESSION innodb_ft_enable_stopword = DEFAULT",
)


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.alter_column("body", existing_type=sa.Text(), nullable=True)
        batch.add_column(sa.Column("kind", sa.String(8), nullable=False, server_default="text"))
        batch.add_column(sa.Column("notice", sa.Text(), nullable=True))
        batch.add_column(sa.Column("edited_ms", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("deleted", sa.Boolean(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("deleted_ms", sa.BigInteger(), nullable=True))
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(
            sa.Column("who_can_add", sa.String(8), nullable=False, server_default="members")
        )
    op.create_table(
        "message_changes",
        sa.Column(
            "seq",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("id", ID, nullable=False),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("room_id", ID, nullable=False),
        sa.Column("actor_id", ID, nullable=False),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.Column("status", sa.String(8), nullable=False),
        sa.Column("body", sa.Text(), nullable=True),
        sa.Column("written_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("seq"),
        sa.UniqueConstraint("id"),
        **TABLE,
    )
    op.create_index("ix_message_changes_message_id", "message_changes", ["message_id"])
    op.create_index("ix_message_changes_status", "message_changes", ["status", "message_id"])
    op.create_table(
        "message_search",
        sa.Column(
            "FTS_DOC_ID",
            sa.BigInteger()
            .with_variant(sa.Integer(), "sqlite")
            .with_variant(mysql.BIGINT(unsigned=True), "mysql"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("message_id", ID, nullable=False),
        sa.Column("room_id", ID, nullable=False),
        sa.Column("sent_ms", sa.BigInteger(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("FTS_DOC_ID"),
        sa.UniqueConstraint("message_id"),
        **TABLE,
    )
    op.create_index(
        "ix_message_search_time", "message_search", ["sent_ms", "message_id", "room_id"]
    )
    op.create_index(
        "ix_message_search_room_time", "message_search", ["room_id", "sent_ms", "message_id"]
    )
    _backfill()
    dialect = op.get_bind().dialect.name
    for statement in FTS5 if dialect == "sqlite" else FULLTEXT:
        op.execute(statement)


def _backfill() -> None:
    """Index every text message that exists, oldest first, in chunks (keyset on the room/time
    index's columns would need a room; the primary key is enough here)."""
    conn = op.get_bind()
    messages = sa.table(
        "messages",
        sa.column("id"),
        sa.column("room_id"),
        sa.column("sent_ms"),
        sa.column("body"),
        sa.column("kind"),
        sa.column("deleted"),
    )
    search = sa.table(
        "message_search",
        sa.column("message_id"),
        sa.column("room_id"),
        sa.column("sent_ms"),
        sa.column("text"),
    )
    last = ""
    while True:
        rows = conn.execute(
            sa.select(messages.c.id, messages.c.room_id, messages.c.sent_ms, messages.c.body)
            .where(messages.c.id > last)
            .order_by(messages.c.id)
            .limit(BACKFILL_ROWS)
        ).all()
        if not rows:
            return
        last = rows[-1].id
        docs = [
            {"message_id": r.id, "room_id": r.room_id, "sent_ms": r.sent_ms, "text": t}
            for r in rows
            if r.body is not None and (t := index_text(r.body))
        ]
        if docs:
            conn.execute(search.insert(), docs)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for trigger in ("message_search_ai", "message_search_ad", "message_search_au"):
            op.execute(f"DROP TRIGGER IF EXISTS {trigger}")
        op.execute("DROP TABLE IF EXISTS message_fts")
    op.drop_table("message_search")
    op.drop_table("message_changes")
    if dialect == "sqlite":  # native: a batch copy of rooms would break memberships' keys
        op.execute("ALTER TABLE rooms DROP COLUMN who_can_add")
    else:
        op.drop_column("rooms", "who_can_add")
    # what the older schema cannot hold: notices go, deleted messages keep an empty body
    op.execute("DELETE FROM messages WHERE kind = 'notice'")
    op.execute("UPDATE messages SET body = '' WHERE body IS NULL")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("deleted_ms")
        batch.drop_column("deleted")
        batch.drop_column("edited_ms")
        batch.drop_column("notice")
        batch.drop_column("kind")
        batch.alter_column("body", existing_type=sa.Text(), nullable=False)
