"""One claim's cost as the queue deepens, on PostgreSQL: does it stay an index lookup?

For each depth (1,000 / 10,000 / 100,000 queued predictions, inserted in one statement, then ANALYZE as
autovacuum would), on a fresh database: the median of 200 claims (each commits, so the queue shrinks by
200, nothing at these depths), against SELECT 1 round trips on the same connection pool in the same run
(the ratio is what to compare across machines); and the plan PostgreSQL chooses for the claim's pick
(``EXPLAIN`` of the statement the store runs). A claim that sorts the whole queue grows with the depth;
one that reads the queue index in order does not.

Run: .venv/bin/python bench/claim_depth.py   (PostgreSQL from scripts/test-postgres.sh)
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sqlalchemy import event, text  # noqa: E402

from openi2v.config import KLING_MODEL  # noqa: E402
from openi2v.domain.prediction import Status  # noqa: E402
from openi2v.store import AccountStore, Database, PredictionStore  # noqa: E402
from openi2v.store.schema import predictions  # noqa: E402
from queue_throughput import INPUTS, LEASE_S, copies, postgres_databases, timed  # noqa: E402

DEPTHS = (1_000, 10_000, 100_000)
CLAIMS = 200


def depth_row(url: str, depth: int) -> tuple[float, float, list[str]]:
    db = Database(url)
    db.migrate()
    key_id, _ = AccountStore(db).create_key("bench")
    store = PredictionStore(db)
    first = store.create(key_id, KLING_MODEL, INPUTS, 0, 0)
    with db.write() as conn:
        conn.execute(predictions.insert(), copies(first, depth - 1, Status.CREATED))
        conn.execute(text("ANALYZE predictions"))
    picks: list[tuple] = []

    @event.listens_for(db._writer, "before_cursor_execute")
    def keep(conn, cursor, statement, parameters, context, executemany) -> None:
        if "FOR UPDATE" in statement and len(picks) < 2:  # the lost-lease pick, then the queued one
            picks.append((statement, parameters))

    with db.read() as conn:
        floor = statistics.median(timed(lambda: conn.execute(text("SELECT 1")).scalar_one(), 200))
    claim = statistics.median(timed(lambda: store.claim("bench", [KLING_MODEL], LEASE_S), CLAIMS))
    with db.read() as conn:
        plan = [row[0] for statement, parameters in picks
                for row in conn.exec_driver_sql("EXPLAIN " + statement, parameters)]
    db.dispose()
    return claim, floor, plan


def main() -> None:
    url = os.environ.get("OPENI2V_TEST_POSTGRES_URL") or subprocess.run(
        ["bash", "scripts/test-postgres.sh"], capture_output=True, text=True, check=True).stdout.strip()
    print(f"{os.cpu_count()} cores; load average {os.getloadavg()[0]:.2f}")
    fresh = postgres_databases(url)
    for depth in DEPTHS:
        with fresh(depth) as (db_url, _):
            started = time.perf_counter()
            claim, floor, plan = depth_row(db_url, depth)
        print(f"\n{depth:>7,} queued: claim median {claim * 1000:.2f} ms, SELECT 1 {floor * 1000:.3f} ms, "
              f"ratio {claim / floor:.1f}  ({time.perf_counter() - started:.0f} s with the inserts)")
        for line in plan:  # how each pick reads the table: an index in order, or a scan and a sort
            if "Scan" in line or "Sort" in line or "Index Cond" in line:
                print("   ", line.strip())


if __name__ == "__main__":
    main()
