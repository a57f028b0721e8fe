"""Run a function in several threads released at the same moment: the races a test wants to see."""

from __future__ import annotations

import threading
from typing import Any, Callable


def at_once(fn: Callable[[int], Any], n: int, timeout_s: float = 120) -> tuple[list[Any], list[BaseException]]:
    """Call ``fn(i)`` for i in 0..n-1, each in its own thread, all starting together; (what they
    returned, what they raised). A thread still running after ``timeout_s`` fails the test."""
    start, lock = threading.Barrier(n), threading.Lock()
    results: list[Any] = []
    errors: list[BaseException] = []

    def run(i: int) -> None:
        start.wait()
        try:
            value = fn(i)
        except BaseException as exc:  # noqa: BLE001 - handed to the test to judge
            with lock:
                errors.append(exc)
        else:
            with lock:
                results.append(value)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout_s)
    assert not any(t.is_alive() for t in threads), "a thread never finished"
    return results, errors
