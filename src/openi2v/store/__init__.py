"""The durable store: predictions (the job queue), API keys, the ledger, uploads and the webhook outbox."""

from openi2v.store.accounts import AccountStore
from openi2v.store.database import Database
from openi2v.store.predictions import PredictionStore
from openi2v.store.uploads import Upload, UploadStore
from openi2v.store.webhooks import Delivery, WebhookStore

__all__ = ["AccountStore", "Database", "Delivery", "PredictionStore", "Upload", "UploadStore",
           "WebhookStore"]
