"""Scenarios: a key's scenario, and what one decided for a prediction (its plan and the time it may
start, when it is held in the queue).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("scenario", sa.Text))
    op.add_column("predictions", sa.Column("scenario", sa.JSON))
    op.add_column("predictions", sa.Column("not_before", sa.Float))


def downgrade() -> None:
    op.drop_column("predictions", "not_before")
    op.drop_column("predictions", "scenario")
    op.drop_column("api_keys", "scenario")
