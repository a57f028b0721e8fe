"""The one exception tree. Each class carries its HTTP status; ``api/app.py`` maps them.

    OpenI2VError
     ├── InvalidInput          400  a field broke a rule ("<field>: <rule>")
     ├── Unauthorized          401  missing or unknown API key
     ├── InsufficientBalance   403
     ├── NotFound              404
     │    └── Gone             410  a file that retention removed
     ├── PayloadTooLarge       413
     ├── Conflict              409  e.g. an upload ticket already used
     ├── TooManyRequests       429  a per-key limit (with Retry-After)
     ├── Unavailable           503  try again soon (with Retry-After; a scenario's simulated outage)
     ├── MediaUnavailable      a referenced URL could not be fetched (task code 1402)
     ├── EngineError           the engine failed a job (task code 1403)
     │    └── ContentBlocked   the NSFW policy blocked the output (task code 1200)
     └── StorageError          writing or reading files failed (infrastructure)

Task codes follow WaveSpeed's table: 1200 moderation, 1401 invalid parameter,
1402 media access failed, 1403 task failed, 5000 internal.
"""

from __future__ import annotations

import math


class OpenI2VError(Exception):
    status_code = 500
    task_code = 5000
    public = False  # a 5xx's message is for the log only, unless the class says it is for the client
    error: str | None = None  # the hosted body's "error" text, where the hosted API documents one

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def headers(self) -> dict[str, str] | None:
        """HTTP headers the answer carries besides the envelope."""
        return None


class InvalidInput(OpenI2VError):
    status_code = 400
    task_code = 1401

    def __init__(self, field: str, rule: str, error: str | None = None) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.error = field, error


class Unauthorized(OpenI2VError):
    status_code = 401


class InsufficientBalance(OpenI2VError):
    status_code = 403


class NotFound(OpenI2VError):
    status_code = 404


class Gone(NotFound):
    status_code = 410


class Conflict(OpenI2VError):
    status_code = 409


class PayloadTooLarge(OpenI2VError):
    status_code = 413

    @property
    def headers(self) -> dict[str, str]:
        return {"Connection": "close"}  # a body refused part-way stays unread: close rather than read the rest


class TooManyRequests(OpenI2VError):
    status_code = 429

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class Unavailable(OpenI2VError):
    """A transient outage the client is told about in words (our own 5xx faults say nothing)."""

    status_code = 503
    public = True

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class MediaUnavailable(OpenI2VError):
    status_code = 400
    task_code = 1402


class EngineError(OpenI2VError):
    task_code = 1403


class ContentBlocked(EngineError):
    task_code = 1200


class StorageError(OpenI2VError):
    pass
