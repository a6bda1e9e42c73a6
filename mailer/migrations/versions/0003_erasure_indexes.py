"""Indexes for erasing readers: deliveries and transactional messages by subscriber.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 09:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_deliveries_subscriber", "deliveries", ["subscriber_id"])
    op.create_index("ix_transactional_subscriber", "transactional_messages", ["subscriber_id"])


def downgrade() -> None:
    op.drop_index("ix_transactional_subscriber", table_name="transactional_messages")
    op.drop_index("ix_deliveries_subscriber", table_name="deliveries")
