"""The shared database schema (SQLAlchemy 2.0 typed models).

One schema, one Alembic history (``migrations/``), used by every service. The auth service owns
users, sessions, refresh tokens, rooms, memberships, the outbox and the login throttle; the
history service owns messages, their changes (edits, deletes) and the search index. Times are
integer milliseconds since the epoch (portable between MySQL and SQLite, exact to the millisecond
the API shows).

The search index is the one part that differs between the databases (see ``MessageSearch``):
an InnoDB ``FULLTEXT`` index on MariaDB/MySQL, an FTS5 table kept in step by triggers on
SQLite. ``search_ddl`` creates that part (the migration and ``metadata.create_all`` alike);
``engine_owned`` names what it creates besides the models' tables and indexes.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    event,
    false,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

ID = String(26)


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    username: Mapped[str] = mapped_column(String(32), unique=True)  # canonical lower case
    password_hash: Mapped[str] = mapped_column(String(255))
    created_ms: Mapped[int] = mapped_column(BigInteger)
    # bumped with every change of the user's memberships (joined/left); the events carry it, so
    # a gateway can tell a stale event from a new one and notice one it missed
    membership_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")


class Session(Base):
    """A login session; access tokens carry its id (``sid``)."""

    __tablename__ = "sessions"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"), index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    expires_ms: Mapped[int] = mapped_column(BigInteger)
    revoked_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True, index=True)


class RefreshToken(Base):
    """Opaque refresh tokens, stored as SHA-256; a used one that comes back kills the session."""

    __tablename__ = "refresh_tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_id: Mapped[str] = mapped_column(ID, ForeignKey("sessions.id"), index=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    used: Mapped[bool] = mapped_column(Boolean, default=False)
    # when it was exchanged: presented again within CHAT_REFRESH_REUSE_GRACE of that (browser
    # tabs sharing the session cookie refresh at once), it still gets an access token
    used_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class Room(Base):
    __tablename__ = "rooms"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))  # direct | group
    name: Mapped[str | None] = mapped_column(String(100), nullable=True)
    owner_id: Mapped[str | None] = mapped_column(ID, ForeignKey("users.id"), nullable=True)
    # "<smaller user id>:<larger user id>" for a direct room: unique per pair, even under races
    direct_key: Mapped[str | None] = mapped_column(String(53), unique=True, nullable=True)
    created_ms: Mapped[int] = mapped_column(BigInteger)
    last_activity_ms: Mapped[int] = mapped_column(BigInteger, index=True)
    # bumped with every change of the room (members, name, owner): events carry it
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    member_count: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # who may add members to a group: "owner" or "members" (PATCH /api/rooms/{id})
    who_can_add: Mapped[str] = mapped_column(String(8), default="members", server_default="members")


class Membership(Base):
    __tablename__ = "memberships"
    room_id: Mapped[str] = mapped_column(ID, ForeignKey("rooms.id"), primary_key=True)
    user_id: Mapped[str] = mapped_column(ID, ForeignKey("users.id"), primary_key=True)
    # the member's (immutable) username, so that a room's members page by name on an index
    username: Mapped[str] = mapped_column(String(32))
    joined_ms: Mapped[int] = mapped_column(BigInteger)
    # the member's read position: the last message read, by the history order (sent_ms, id);
    # null: nothing read yet (unread counts the messages since ``joined_ms``). One row per
    # member, written only when that member reads: a message costs no write per member.
    last_read_id: Mapped[str | None] = mapped_column(ID, nullable=True)
    last_read_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    muted: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    __table_args__ = (
        Index("ix_memberships_user", "user_id", "room_id"),
        Index("ix_memberships_room_username", "room_id", "username", unique=True),
    )


class Message(Base):
    """Owned by the history service. ``id`` is derived from (sender, client_msg_id).

    ``kind`` is ``text`` or ``notice`` (what happened in the room: ``notice`` holds its JSON,
    ``{"event","username","by","name"}``, and ``body`` is NULL; ``sender_id`` is then the room's
    id, so no user's send can ever take a notice's id). A deleted message keeps its row as a
    tombstone: ``body`` NULL, ``deleted`` true, and no entry in the search index."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    room_id: Mapped[str] = mapped_column(ID)
    sender_id: Mapped[str] = mapped_column(ID)
    sender: Mapped[str] = mapped_column(String(32))
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_ms: Mapped[int] = mapped_column(BigInteger)
    client_msg_id: Mapped[str] = mapped_column(String(64))
    written_ms: Mapped[int] = mapped_column(BigInteger)
    kind: Mapped[str] = mapped_column(String(8), default="text", server_default="text")
    notice: Mapped[str | None] = mapped_column(Text, nullable=True)
    edited_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    deleted: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    deleted_ms: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    __table_args__ = (
        Index("ix_messages_room_time", "room_id", "sent_ms", "id"),
        UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_cmid"),
    )


class MessageChange(Base):
    """Every edit and delete the history writer received, once (its id is derived from the
    actor and the frame's ``client_msg_id``: a redelivered or retried change finds its row and
    changes nothing again). ``status``: ``applied``; ``pending`` (its message is not stored yet:
    applied, in ``seq`` order, by the batch that stores it; ``body`` holds a pending edit's text
    until then, never after); ``refused`` (not the sender's, not the owner's, a notice, another
    room); ``moot`` (the message was already deleted); ``expired`` (pending for too long)."""

    __tablename__ = "message_changes"
    seq: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    id: Mapped[str] = mapped_column(ID, unique=True)
    message_id: Mapped[str] = mapped_column(ID, index=True)
    room_id: Mapped[str] = mapped_column(ID)
    actor_id: Mapped[str] = mapped_column(ID)
    kind: Mapped[str] = mapped_column(String(8))  # edit | delete
    at_ms: Mapped[int] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(8))
    body: Mapped[str | None] = mapped_column(Text, nullable=True)
    written_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (Index("ix_message_changes_status", "status", "message_id"),)


DOC_ID = (
    BigInteger().with_variant(Integer, "sqlite").with_variant(mysql.BIGINT(unsigned=True), "mysql")
)


class MessageSearch(Base):
    """The search index's documents: one row per text message that is not deleted, holding its
    folded words (services/history/searchtext.py), written in the same transaction as the
    message, its edit (the row is replaced: a new ``FTS_DOC_ID``) or its delete (the row goes).

    MariaDB/MySQL: an InnoDB ``FULLTEXT`` index on ``text`` (``FTS_DOC_ID`` is InnoDB's
    document id, named so that InnoDB uses this column instead of a hidden one). SQLite: the
    FTS5 table ``message_fts`` indexes ``text`` as external content (rowid = ``FTS_DOC_ID``),
    kept in step by triggers on this table."""

    __tablename__ = "message_search"
    doc_id: Mapped[int] = mapped_column("FTS_DOC_ID", DOC_ID, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(ID, unique=True)
    room_id: Mapped[str] = mapped_column(ID)
    sent_ms: Mapped[int] = mapped_column(BigInteger)
    text: Mapped[str] = mapped_column(Text)
    __table_args__ = (
        # the newest documents (with their room: the caller's rooms are filtered on the index)
        Index("ix_message_search_time", "sent_ms", "message_id", "room_id"),
        Index("ix_message_search_room_time", "room_id", "sent_ms", "message_id"),  # a room's
    )


FULLTEXT_INDEX = "ft_message_search_text"
FTS5_TABLE = "message_fts"
FTS5_TOKENIZE = "unicode61 remove_diacritics 0 tokenchars '_'"
SQLITE_SEARCH_DDL = (
    f"CREATE VIRTUAL TABLE {FTS5_TABLE} USING fts5(text, content='message_search', "
    f"content_rowid='FTS_DOC_ID', tokenize=\"{FTS5_TOKENIZE}\")",
    "CREATE TRIGGER message_search_ai AFTER INSERT ON message_search BEGIN "
    f"INSERT INTO {FTS5_TABLE}(rowid, text) VALUES (new.FTS_DOC_ID, new.text); END",
    "CREATE TRIGGER message_search_ad AFTER DELETE ON message_search BEGIN "
    f"INSERT INTO {FTS5_TABLE}({FTS5_TABLE}, rowid, text) "
    "VALUES ('delete', old.FTS_DOC_ID, old.text); END",
    "CREATE TRIGGER message_search_au AFTER UPDATE ON message_search BEGIN "
    f"INSERT INTO {FTS5_TABLE}({FTS5_TABLE}, rowid, text) "
    "VALUES ('delete', old.FTS_DOC_ID, old.text); "
    f"INSERT INTO {FTS5_TABLE}(rowid, text) VALUES (new.FTS_DOC_ID, new.text); END",
)
MYSQL_SEARCH_DDL = (
    # the index is created without stopwords: "the", "who", "will" are words people search
    "SET SESSION innodb_ft_enable_stopword = 0",
    f"CREATE FULLTEXT INDEX {FULLTEXT_INDEX} ON message_search (text)",
    "SET SESSION innodb_ft_enable_stopword = DEFAULT",
)


def search_ddl(dialect: str) -> tuple[str, ...]:
    """The statements creating the search index on an existing ``message_search`` table."""
    if dialect == "sqlite":
        return SQLITE_SEARCH_DDL
    if dialect in ("mysql", "mariadb"):
        return MYSQL_SEARCH_DDL
    raise NotImplementedError(f"no full-text search for the {dialect!r} dialect")


def engine_owned(name: str) -> bool:
    """Objects of the search index that the models do not describe (FTS5's table and its
    shadow tables, the FULLTEXT index): schema comparisons leave them out."""
    return name == FULLTEXT_INDEX or name == FTS5_TABLE or name.startswith(FTS5_TABLE + "_")


@event.listens_for(MessageSearch.__table__, "after_create")
def _create_search_index(target: Any, connection: Any, **_: Any) -> None:
    for statement in search_ddl(connection.dialect.name):
        connection.execute(text(statement))


class Outbox(Base):
    """Events committed with the change that caused them, relayed to the broker afterwards."""

    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    exchange: Mapped[str] = mapped_column(String(64))
    routing_key: Mapped[str] = mapped_column(String(128))
    body: Mapped[str] = mapped_column(Text)
    created_ms: Mapped[int] = mapped_column(BigInteger)


class LoginThrottle(Base):
    """Login failure counters shared by every auth worker and replica (fixed windows)."""

    __tablename__ = "login_throttle"
    bucket: Mapped[str] = mapped_column(String(160), primary_key=True)  # "user:alice:<window>"
    failures: Mapped[int] = mapped_column(Integer, default=0)
    expires_ms: Mapped[int] = mapped_column(BigInteger, index=True)


class ClusterConfig(Base):
    """Settings the whole cluster shares and changes at run time (services/common/config.py):
    the history shards' count and whether sends are paused for a reshard."""

    __tablename__ = "cluster_config"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(String(255))
    updated_ms: Mapped[int] = mapped_column(BigInteger)
