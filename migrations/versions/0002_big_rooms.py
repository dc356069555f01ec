"""Rooms of thousands: membership versions, member counts, members paged by name.

- ``users.membership_seq``: bumped with each change of a user's memberships; the ``joined`` /
  ``left`` events carry it (a gateway drops stale events and notices missed ones);
- ``rooms.version``: bumped with each change of a room; room events carry it;
- ``rooms.member_count``: kept in the same transaction as the memberships;
- ``memberships.username``: the member's username (usernames never change), indexed with the
  room, so ``GET /api/rooms/{id}/members`` pages by name on an index.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("users") as batch:
        batch.add_column(
            sa.Column("membership_seq", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("rooms") as batch:
        batch.add_column(sa.Column("version", sa.BigInteger(), nullable=False, server_default="0"))
        batch.add_column(
            sa.Column("member_count", sa.Integer(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("username", sa.String(32), nullable=True))
    op.execute(
        "UPDATE memberships SET username = "
        "(SELECT users.username FROM users WHERE users.id = memberships.user_id)"
    )
    op.execute(
        "UPDATE rooms SET member_count = "
        "(SELECT COUNT(*) FROM memberships WHERE memberships.room_id = rooms.id)"
    )
    with op.batch_alter_table("memberships") as batch:
        batch.alter_column("username", existing_type=sa.String(32), nullable=False)
        batch.create_index(
            "ix_memberships_room_username", ["room_id", "username"], unique=True
        )


def downgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.drop_index("ix_memberships_room_username")
        batch.drop_column("username")
    with op.batch_alter_table("rooms") as batch:
        batch.drop_column("member_count")
        batch.drop_column("version")
    with op.batch_alter_table("users") as batch:
        batch.drop_column("membership_seq")
