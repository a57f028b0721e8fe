"""A prediction, its statuses, the legal moves between them, and what a worker records when a job ends."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any


class Status(str, enum.Enum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"  # ours: the user stopped it (the official clients treat it as terminal)

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED, Status.CANCELLED)

    @property
    def billable(self) -> bool:
        """Whether the prediction's price is (or will be, if it completes) charged."""
        return self not in (Status.FAILED, Status.CANCELLED)


# created -> processing when a worker claims it; processing -> processing when a lost lease is
# claimed again; processing -> created when its worker hands it back (stopping, or storage failed);
# either may fail (e.g. bad media, or no attempts left) or be cancelled.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELLED}),
    Status.PROCESSING: frozenset({Status.PROCESSING, Status.COMPLETED, Status.FAILED, Status.CREATED,
                                  Status.CANCELLED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
    Status.CANCELLED: frozenset(),
}


# As stored: waiting or running (its quote held), and ended.
OPEN = tuple(s.value for s in Status if not s.terminal)
ENDED = tuple(s.value for s in Status if s.terminal)


def expiry(ended_at: float, retention_s: float) -> float | None:
    """When retention removes what was made (or ended) at ``ended_at``; None: kept for ever."""
    return ended_at + retention_s if retention_s else None


def can_move(old: Status, new: Status) -> bool:
    return new in TRANSITIONS[old]


@dataclass
class Prediction:
    id: str
    api_key_id: int
    model: str
    status: Status
    inputs: dict[str, Any]
    seed: int
    base64_output: bool
    price_micros: int
    created_at: float
    started_at: float | None = None
    completed_at: float | None = None
    outputs: list[str] = field(default_factory=list)
    nsfw: list[bool] = field(default_factory=list)
    error: str = ""
    error_code: int | None = None
    inference_ms: int = 0
    progress: int = 0
    details: dict[str, Any] = field(default_factory=dict)
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    attempts: int = 0
    webhook: dict[str, str] | None = None  # {"url", "base"}: POST the result there when it ends
    expires_at: float | None = None  # when retention removes its files (known once it ends)
    swept_at: float | None = None  # when it did
    scenario: dict[str, Any] | None = None  # what a scenario decided for it (domain/scenarios.py's Plan)
    not_before: float | None = None  # held in the queue until then

    @property
    def files(self) -> list[str]:
        return stored_files(self.outputs, self.details)

    @classmethod
    def from_row(cls, row: Any) -> "Prediction":
        values = dict(row if isinstance(row, dict) else row._mapping)
        values["status"] = Status(values["status"])
        return cls(**values)


def stored_files(outputs: list[str], details: dict[str, Any]) -> list[str]:
    """The files a result names (storage paths): its outputs and a poster."""
    return [*outputs, *([details["poster"]] if "poster" in details else [])]


@dataclass(frozen=True)
class Outcome:
    """What a worker records when a job ends."""

    status: Status
    outputs: list[str] = field(default_factory=list)
    nsfw: list[bool] = field(default_factory=list)
    error: str = ""
    error_code: int | None = None
    inference_ms: int = 0
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def files(self) -> list[str]:
        return stored_files(self.outputs, self.details)
