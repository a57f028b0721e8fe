"""Tables. Times are UNIX seconds (floats) so ordering and leases work alike on every dialect.

Changing a table means a new Alembic revision in ``migrations/versions``.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON, BigInteger, Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
    UniqueConstraint,
)

metadata = MetaData()

api_keys = Table(
    "api_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(200), nullable=False, default=""),
    Column("prefix", String(16), nullable=False),
    Column("key_hash", String(64), nullable=False, unique=True),  # SHA-256 hex; the key itself is never stored
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float),
    Column("touched_at", Float),
    Column("webhook_secret", String(64)),  # "whsec_..."; made on first use
    Column("rate_tat_us", BigInteger),  # submits-per-minute state, microseconds (domain/limits.py's GCRA)
    Column("scenario", Text),  # a scenario SPEC its predictions follow (domain/scenarios.py); None: real
)

predictions = Table(
    "predictions", metadata,
    Column("id", String(32), primary_key=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("model", String(200), nullable=False),
    Column("status", String(16), nullable=False),
    Column("inputs", JSON, nullable=False),
    Column("seed", BigInteger, nullable=False),
    Column("base64_output", Boolean, nullable=False, default=False),
    Column("price_micros", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("completed_at", Float),
    Column("outputs", JSON, nullable=False, default=list),
    Column("nsfw", JSON, nullable=False, default=list),
    Column("error", Text, nullable=False, default=""),
    Column("error_code", Integer),
    Column("inference_ms", Integer, nullable=False, default=0),
    Column("progress", Integer, nullable=False, default=0),
    Column("details", JSON, nullable=False, default=dict),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("webhook", JSON),  # {"url": where to POST the result, "base": the API's base URL at submit}
    Column("expires_at", Float),  # when its files are swept (set when it ends; None: kept for ever)
    Column("swept_at", Float),  # when retention removed its files
    Column("scenario", JSON),  # what a scenario decided for it (domain/scenarios.py's Plan); None: nothing
    Column("not_before", Float),  # held in the queue until then (a scenario's queue time)
    Index("ix_predictions_queue", "status", "created_at"),
    Index("ix_predictions_owner", "api_key_id", "created_at"),
    Index("ix_predictions_sweep", "swept_at", "expires_at"),
    Index("ix_predictions_key_status", "api_key_id", "status"),
)

ledger = Table(
    "ledger", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False, index=True),
    Column("prediction_id", String(32)),
    Column("kind", String(16), nullable=False),  # "credit" or "charge"
    Column("amount_micros", BigInteger, nullable=False),  # credits positive, charges negative
    Column("created_at", Float, nullable=False),
    UniqueConstraint("prediction_id", "kind", name="uq_ledger_prediction_kind"),
    Index("ix_ledger_key_time", "api_key_id", "created_at"),
)

uploads = Table(
    "uploads", metadata,
    Column("token", String(64), primary_key=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("filename", String(255), nullable=False),
    Column("content_type", String(100), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("put_expires_at", Float, nullable=False),
    Column("received_at", Float),
    Column("expires_at", Float),  # when retention removes it (None: kept for ever)
    Index("ix_uploads_expires", "expires_at"),
)

# Which uploads a prediction names (its inputs, kept as uploads or ours already): retention keeps an
# upload while a prediction naming it is queued or running. Written in the transaction that creates it.
upload_refs = Table(
    "upload_refs", metadata,
    Column("token", String(64), primary_key=True),
    Column("prediction_id", String(32), primary_key=True),
)

# Files retention removed, by URL path ("files/<token>/<name>"): fetching one is a 410 that says so,
# not a bare 404. Kept for one more retention period.
expired_files = Table(
    "expired_files", metadata,
    Column("path", String(300), primary_key=True),
    Column("expired_at", Float, nullable=False, index=True),
)

# The webhook outbox: a row is written in the same transaction that ends its prediction, so a
# crash can delay a delivery but never lose one. The prediction id is the stable webhook-id.
webhook_deliveries = Table(
    "webhook_deliveries", metadata,
    Column("prediction_id", String(32), primary_key=True),
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), nullable=False),
    Column("url", Text, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),  # when the next attempt is due
    Column("delivered_at", Float),
    Column("gave_up_at", Float),
    Column("last_error", Text, nullable=False, default=""),
    Column("lease_owner", String(64)),
    Column("lease_expires_at", Float),
    Column("created_at", Float, nullable=False),
    Index("ix_webhook_due", "delivered_at", "gave_up_at", "next_at"),
)

# Idempotent submits: a client's Idempotency-Key (per API key) names the prediction its first submit
# made, with a hash of what that submit asked for. Written in the transaction that creates it.
idempotency_keys = Table(
    "idempotency_keys", metadata,
    Column("api_key_id", Integer, ForeignKey("api_keys.id"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("request_hash", String(64), nullable=False),  # SHA-256 hex of the model, body and webhook
    Column("prediction_id", String(32), nullable=False),
    Column("created_at", Float, nullable=False),
)
