"""A prediction's statuses and the transitions between them."""

from __future__ import annotations

import enum


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


# created -> processing when a worker claims it; processing -> created when a lost
# lease is requeued; either may fail (e.g. bad media, or no attempts left) or be cancelled.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.PROCESSING, Status.FAILED, Status.CANCELLED}),
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.FAILED, Status.CREATED, Status.CANCELLED}),
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
