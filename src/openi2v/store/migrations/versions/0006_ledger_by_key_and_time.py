"""A key's ledger newest first (billings/search, usage_stats) by an index, not a sort of all its entries.

Revision ID: 0006
Revises: 0005
"""
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_key_time", "ledger", ["api_key_id", "created_at"])


def downgrade() -> None:
    op.drop_index("ix_ledger_key_time", "ledger")
