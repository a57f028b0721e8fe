"""Webhooks: a secret per key, the webhook of a prediction, and the delivery outbox.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("webhook_secret", sa.String(64)))
    with op.batch_alter_table("predictions") as batch:
        batch.add_column(sa.Column("webhook", sa.JSON))
    op.create_table(
        "webhook_deliveries",
        sa.Column("prediction_id", sa.String(32), primary_key=True),
        sa.Column("api_key_id", sa.Integer, sa.ForeignKey("api_keys.id"), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_at", sa.Float, nullable=False),
        sa.Column("delivered_at", sa.Float),
        sa.Column("gave_up_at", sa.Float),
        sa.Column("last_error", sa.Text, nullable=False),
        sa.Column("lease_owner", sa.String(64)),
        sa.Column("lease_expires_at", sa.Float),
        sa.Column("created_at", sa.Float, nullable=False),
    )
    op.create_index("ix_webhook_due", "webhook_deliveries", ["delivered_at", "gave_up_at", "next_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_due", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    with op.batch_alter_table("predictions") as batch:
        batch.drop_column("webhook")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("webhook_secret")
