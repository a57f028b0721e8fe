"""Limits per key and retention: a key's submit rate state, when outputs and uploads expire, which
uploads each prediction names, and the files retention removed (so that fetching one says so).

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("api_keys", sa.Column("rate_tat_us", sa.BigInteger))
    op.add_column("predictions", sa.Column("expires_at", sa.Float))
    op.add_column("predictions", sa.Column("swept_at", sa.Float))
    op.create_index("ix_predictions_sweep", "predictions", ["swept_at", "expires_at"])
    op.create_index("ix_predictions_key_status", "predictions", ["api_key_id", "status"])
    op.add_column("uploads", sa.Column("expires_at", sa.Float))
    op.create_index("ix_uploads_expires", "uploads", ["expires_at"])
    op.create_table(
        "expired_files",
        sa.Column("path", sa.String(300), primary_key=True),
        sa.Column("expired_at", sa.Float, nullable=False),
    )
    op.create_index("ix_expired_files_expired_at", "expired_files", ["expired_at"])
    op.create_table(
        "upload_refs",
        sa.Column("token", sa.String(64), primary_key=True),
        sa.Column("prediction_id", sa.String(32), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("upload_refs")
    op.drop_table("expired_files")
    op.drop_index("ix_uploads_expires", "uploads")
    op.drop_column("uploads", "expires_at")
    op.drop_index("ix_predictions_key_status", "predictions")
    op.drop_index("ix_predictions_sweep", "predictions")
    op.drop_column("predictions", "swept_at")
    op.drop_column("predictions", "expires_at")
    op.drop_column("api_keys", "rate_tat_us")
