"""No index on deliveries.subscriber_id alone.

Every delivery row paid for an entry in it at planning and again at each status change (a
million-reader plan: 8.0 s with it, 6.7 s without). Erasure, the data export and the admin's
reader page find a reader's rows through the unique (edition_id, subscriber_id) index instead,
one edition at a time (``mailer.readers.deliveries_of``).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 13:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_deliveries_subscriber", table_name="deliveries")


def downgrade() -> None:
    op.create_index("ix_deliveries_subscriber", "deliveries", ["subscriber_id"])
