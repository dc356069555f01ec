"""The shared database schema (SQLAlchemy 2.0 typed models).

One schema, one Alembic history (``migrations/``), used by every service. The auth service owns
users, sessions, refresh tokens, rooms, memberships, the outbox and the login throttle; the
history service owns messages. Times are integer milliseconds since the epoch (portable between
MySQL and SQLite, exact to the millisecond the API shows).
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
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
    """Owned by the history service. ``id`` is derived from (sender, client_msg_id)."""

    __tablename__ = "messages"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    room_id: Mapped[str] = mapped_column(ID)
    sender_id: Mapped[str] = mapped_column(ID)
    sender: Mapped[str] = mapped_column(String(32))
    body: Mapped[str] = mapped_column(Text)
    sent_ms: Mapped[int] = mapped_column(BigInteger)
    client_msg_id: Mapped[str] = mapped_column(String(64))
    written_ms: Mapped[int] = mapped_column(BigInteger)
    __table_args__ = (
        Index("ix_messages_room_time", "room_id", "sent_ms", "id"),
        UniqueConstraint("sender_id", "client_msg_id", name="uq_messages_sender_cmid"),
    )


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
