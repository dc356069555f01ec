"""Read state per member, and the refresh tokens' reuse grace (issue 16).

- ``memberships.last_read_id`` / ``last_read_ms``: the member's read position (the last message
  read, in the history order ``(sent_ms, id)``); unread counts are computed from it on demand,
  so a message costs no write per member. Existing members start with everything sent before
  the upgrade read (the web client had no server-side state to carry over: counting the whole
  past as unread would light up every room).
- ``memberships.muted``: the member muted the room (no notifications).
- ``refresh_tokens.used_ms``: when the token was exchanged (a copy presented within
  ``CHAT_REFRESH_REUSE_GRACE`` seconds of that still gets an access token).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("memberships") as batch:
        batch.add_column(sa.Column("last_read_id", sa.String(26), nullable=True))
        batch.add_column(sa.Column("last_read_ms", sa.BigInteger(), nullable=True))
        batch.add_column(
            sa.Column("muted", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.add_column(sa.Column("used_ms", sa.BigInteger(), nullable=True))
    # everything already in a room counts as read: each member's position is the room's newest
    # message (one indexed lookup per membership, on the (room_id, sent_ms, id) index)
    newest = (
        "SELECT {col} FROM messages m WHERE m.room_id = memberships.room_id "
        "ORDER BY m.sent_ms DESC, m.id DESC LIMIT 1"
    )
    op.execute(
        f"UPDATE memberships SET last_read_ms = ({newest.format(col='m.sent_ms')}), "
        f"last_read_id = ({newest.format(col='m.id')})"
    )


def downgrade() -> None:
    with op.batch_alter_table("refresh_tokens") as batch:
        batch.drop_column("used_ms")
    with op.batch_alter_table("memberships") as batch:
        batch.drop_column("muted")
        batch.drop_column("last_read_ms")
        batch.drop_column("last_read_id")
