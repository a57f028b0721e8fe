"""The durable store: predictions (the job queue), API keys, the ledger and uploads."""

from openi2v.store.accounts import AccountStore
from openi2v.store.database import Database
from openi2v.store.predictions import Prediction, PredictionStore
from openi2v.store.uploads import Upload, UploadStore

__all__ = ["AccountStore", "Database", "Prediction", "PredictionStore", "Upload", "UploadStore"]
