"""A prediction's statuses and the transitions between them."""

from __future__ import annotations

import enum


class Status(str, enum.Enum):
    CREATED = "created"
    PROCESSING = "processing"
    COMPLETED = "completed"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (Status.COMPLETED, Status.FAILED)


# created -> processing when a worker claims it; processing -> created when a lost
# lease is requeued; either may fail (e.g. bad media, or no attempts left).
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.CREATED: frozenset({Status.PROCESSING, Status.FAILED}),
    Status.PROCESSING: frozenset({Status.COMPLETED, Status.FAILED, Status.CREATED}),
    Status.COMPLETED: frozenset(),
    Status.FAILED: frozenset(),
}


def can_move(old: Status, new: Status) -> bool:
    return new in TRANSITIONS[old]
