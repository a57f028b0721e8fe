"""The job queue under 1, 4, 16 and 64 polling workers, on SQLite and on PostgreSQL, in one run.

Each worker is a process, as real workers are (forked from a forkserver that has imported the store,
so that 64 start in seconds; real ones are spawned, which changes only their start), running
``Worker.run``'s loop with a render that takes no time, so that the queue alone is measured: claim; when
the queue is empty wait ``POLL_S`` (0.2 s, the default ``poll_s``); else finish the job at once. For each N,
on a fresh database, the same N workers go through three phases:

1. idle: the queue empty for IDLE_S. The statements the workers send per second, counted in each
   process by a SQLAlchemy ``before_cursor_execute`` event (it misses psycopg's implicit BEGIN, COMMIT
   and the pool's pre-ping); on PostgreSQL also the transactions the database committed or rolled back
   (``pg_stat_database``, which each backend flushes at most once a second: up to 1 s of a 5 s window
   off at N=1, averaged out at larger N).
2. steady: one producer submits RATE predictions a second (``PredictionStore.create``) for STEADY_S.
   Submit-to-start = when a worker's claim returned the job - its ``created_at``. An idle worker looks
   every ``POLL_S``, so with one worker expect about POLL_S / 2 at the median from the wait alone.
3. saturated: PREFILL predictions inserted in one statement; claims per second over SATURATED_S after
   WARMUP_S (the queue must not run dry meanwhile: the count left is printed), and the statements per
   second they cost. Claim latency = the duration of the claim calls that returned a job.

In each window the CPU used by the workers, by the PostgreSQL backends of the benchmark's database (from
/proc) and by the whole machine: "all" far above the other two means something else ran meanwhile.

Baselines, same run, from one process on an idle database: SELECT 1 round trips; a one-row UPDATE
committed; a claim finding the queue empty (an idle poll), on a fresh table and beside HISTORY ended
predictions; and N=1. On this 2-core machine the N processes, the producer and the database share the
cores: at 16 and 64 workers a claim's duration includes waiting for a core, which workers on machines
of their own would not.

Run: .venv/bin/python bench/queue_throughput.py   (PostgreSQL from scripts/test-postgres.sh; without it
SQLite alone)
"""

from __future__ import annotations

import multiprocessing
import os
import random
import secrets
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, ContextManager, Iterator

from sqlalchemy import create_engine, event, func, select, text, update
from sqlalchemy.engine import Engine

from openi2v.config import KLING_MODEL
from openi2v.domain.prediction import Status
from openi2v.store import AccountStore, Database, PredictionStore
from openi2v.store.schema import api_keys, predictions

try:
    from openi2v.domain.prediction import Outcome
except ImportError:  # where it lived before
    from openi2v.store.predictions import Outcome

WORKERS = (1, 4, 16, 64)
POLL_S, LEASE_S = 0.2, 30.0
IDLE_S, RATE, STEADY_S, PREFILL, WARMUP_S, SATURATED_S = 5.0, 20, 4.0, 6000, 1.0, 3.0
HISTORY = 100_000  # ended predictions beside an empty queue, for the empty-claim baseline
P99_LIMIT_S = 0.100
MP = multiprocessing.get_context("forkserver")  # forked from a process that has imported the store: 64 start fast
INPUTS = {"image": "https://example.com/a.png", "prompt": "slow zoom in", "duration": 5}


def work(url: str, index: int, statements, ready, stop, results) -> None:
    """One polling worker: (claimed at, claim seconds, submit-to-start seconds) per job, and errors."""
    def count(*_) -> None:
        statements[index] += 1

    event.listen(Engine, "before_cursor_execute", count)
    store, owner = PredictionStore(Database(url)), f"bench-{index}"
    store.claim(owner, [KLING_MODEL], LEASE_S)  # connected before the clock starts
    ready.wait()
    stop.wait(random.uniform(0, POLL_S))  # real workers start at unrelated times
    claims, errors = [], []
    while not stop.is_set():
        began = time.perf_counter()
        try:
            job = store.claim(owner, [KLING_MODEL], LEASE_S)
            if job is None:
                stop.wait(POLL_S)
                continue
            took, t = time.perf_counter() - began, time.time()
            claims.append((t, took, t - job.created_at))
            store.finish(job.id, owner, Outcome(Status.COMPLETED, outputs=[f"{job.id}.mp4"]))
        except Exception as exc:  # recorded, as Worker.run logs it, and tried again after 1 s
            errors.append(f"{type(exc).__name__}: {exc}".splitlines()[0])
            stop.wait(1.0)
    results.put((claims, errors))


@dataclass(frozen=True)
class Load:
    """What a window cost per second: statements the workers sent, cores their processes kept busy,
    cores the whole machine kept busy (other processes, when it is far above the two others), and on
    PostgreSQL the transactions the database ran and the cores its backends kept busy."""

    queries: float
    worker_cores: float
    machine_cores: float
    xacts: float | None
    db_cores: float | None


@dataclass
class Row:
    n: int
    claims_per_s: float
    claim_s: list[float]  # saturated
    steady_claim_s: list[float]
    to_start_s: list[float]
    unstarted: int  # steady submits no worker had claimed a second after the last one
    idle: Load
    busy: Load  # saturated
    queued_at_end: int  # of the saturated window: 0 means the queue ran dry
    errors: list[str]


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] if values else float("nan")


def ms(values: list[float], digits: int = 1) -> str:
    return " / ".join(f"{pct(values, q) * 1000:.{digits}f}" for q in (0.5, 0.99))


def cpu(load: Load) -> str:
    return " / ".join("-" if cores is None else f"{cores * 100:.0f}%"
                      for cores in (load.worker_cores, load.db_cores, load.machine_cores))


def cpu_s(pids) -> float:
    """CPU seconds (user + system) these processes have used so far."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:  # ended meanwhile
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def machine_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (neither idle nor waiting for I/O) so far."""
    ticks = [int(t) for t in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def measure(url: str, n: int, server: Callable[[], tuple[int, float] | None]) -> Row:
    db = Database(url)
    db.migrate()
    key_id, _ = AccountStore(db).create_key("bench")
    store = PredictionStore(db)
    statements = MP.Array("q", n, lock=False)  # one counter per worker: no lock between them
    ready, stop, results = MP.Barrier(n + 1), MP.Event(), MP.Queue()
    procs = [MP.Process(target=work, args=(url, i, statements, ready, stop, results)) for i in range(n)]
    for proc in procs:
        proc.start()
    ready.wait(timeout=300)
    time.sleep(POLL_S)

    def counters() -> tuple:
        return (time.time(), sum(statements), cpu_s(proc.pid for proc in procs), machine_cpu_s(),
                *(server() or (None, None)))

    def load(before: tuple, after: tuple) -> Load:
        seconds = after[0] - before[0]
        return Load(*(None if a is None else (b - a) / seconds for a, b in zip(before[1:], after[1:])))

    # 1. idle
    before = counters()
    time.sleep(IDLE_S)
    idle = load(before, counters())

    # 2. steady
    t0 = time.time()
    for i in range(int(RATE * STEADY_S)):
        time.sleep(max(0.0, t0 + i / RATE - time.time()))
        last = store.create(key_id, KLING_MODEL, INPUTS, 0, 0)
    time.sleep(1.0)
    t1 = time.time()

    # 3. saturated
    with db.write() as conn:
        conn.execute(predictions.insert(), copies(last, PREFILL, Status.CREATED))
    time.sleep(WARMUP_S)
    before = counters()
    time.sleep(SATURATED_S)
    after = counters()
    with db.read() as conn:
        queued = conn.execute(select(func.count()).where(predictions.c.status == Status.CREATED.value)).scalar_one()

    stop.set()
    done = [results.get(timeout=120) for _ in procs]
    for proc in procs:
        proc.join()
    db.dispose()
    claims = [c for claimed, _ in done for c in claimed]
    steady = [c for c in claims if t0 <= c[0] <= t1]
    saturated = [c for c in claims if before[0] <= c[0] <= after[0]]
    return Row(n, len(saturated) / (after[0] - before[0]), [c[1] for c in saturated], [c[1] for c in steady],
               [c[2] for c in steady], int(RATE * STEADY_S) - len(steady), idle, load(before, after), queued,
               [e for _, errors in done for e in errors])


def timed(call: Callable[[], object], times: int = 500) -> list[float]:
    took = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        took.append(time.perf_counter() - began)
    return took


def copies(p, count: int, status: Status) -> list[dict]:
    """Rows like prediction ``p``, with new ids, for one INSERT."""
    row = {c.name: getattr(p, c.name) for c in predictions.c} | {"status": status.value}
    return [row | {"id": secrets.token_hex(16), "created_at": time.time()} for _ in range(count)]


def round_trips(url: str) -> dict[str, list[float]]:
    """The floors under a claim: SELECT 1 on one connection; a one-row UPDATE committed through
    ``Database.write``, as a claim commits; a claim finding the queue empty (an idle poll)."""
    db = Database(url)
    db.migrate()
    key_id, _ = AccountStore(db).create_key("bench")
    store = PredictionStore(db)
    touch = update(api_keys).where(api_keys.c.id == key_id).values(touched_at=0.0)

    def commit() -> None:
        with db.write() as conn:
            conn.execute(touch)

    def empty_claim() -> None:
        assert store.claim("bench", [KLING_MODEL], LEASE_S) is None

    with db.read() as conn:
        floors = {"SELECT 1": timed(lambda: conn.execute(text("SELECT 1")).scalar_one())}
    floors["one-row UPDATE committed"] = timed(commit)
    ended = store.create(key_id, KLING_MODEL, INPUTS, 0, 0)
    store.finish(store.claim("bench", [KLING_MODEL], LEASE_S).id, "bench", Outcome(Status.COMPLETED))
    floors["empty claim"] = timed(empty_claim, 200)
    with db.write() as conn:
        conn.execute(predictions.insert(), copies(ended, HISTORY, Status.COMPLETED))
    if not db.is_sqlite:  # as autovacuum would by now; nothing runs ANALYZE on SQLite
        with db.write() as conn:
            conn.execute(text("ANALYZE predictions"))
    floors[f"empty claim beside {HISTORY:,} ended predictions"] = timed(empty_claim, 200)
    db.dispose()
    return floors


def report(name: str, floors: dict[str, list[float]], rows: list[Row]) -> None:
    select_1 = floors["SELECT 1"]
    print(f"\n{name}; baselines, p50 / p99 ms:")
    print("  " + "; ".join(f"{what} {ms(took, 3)}" for what, took in floors.items()))
    print(f"{'N':>3}  {'claims/s':>8}  {'vs N=1':>6}  {'claim p50/p99 ms':>16}  {'p99/SELECT 1':>12}  "
          f"{'queued at end':>13}  {f'at {RATE}/s: claim p50/p99':>24}  {'submit->start p50/p99':>21}")
    for r in rows:
        print(f"{r.n:>3}  {r.claims_per_s:>8.0f}  {r.claims_per_s / rows[0].claims_per_s:>6.2f}  "
              f"{ms(r.claim_s):>16}  {pct(r.claim_s, 0.99) / pct(select_1, 0.99):>12.0f}  {r.queued_at_end:>13}  "
              f"{ms(r.steady_claim_s):>24}  {ms(r.to_start_s):>21}")
    print(f"{'N':>3}  {'idle: queries/s':>15}  {'xacts/s':>7}  {'CPU workers / db / all':>22}  "
          f"{'busy: queries/s':>15}  {'xacts/s':>7}  {'CPU workers / db / all':>22}  {'idle/busy queries':>17}")
    for r in rows:
        idle_xacts, busy_xacts = ("-" if x is None else f"{x:.0f}" for x in (r.idle.xacts, r.busy.xacts))
        print(f"{r.n:>3}  {r.idle.queries:>15.0f}  {idle_xacts:>7}  {cpu(r.idle):>22}  "
              f"{r.busy.queries:>15.0f}  {busy_xacts:>7}  {cpu(r.busy):>22}  "
              f"{r.idle.queries / r.busy.queries:>17.2f}")
    for r in rows:
        if not r.queued_at_end or r.unstarted or r.errors:
            print(f"N={r.n}: queue ran dry in the saturated window: {not r.queued_at_end}; steady submits not started: "
                  f"{r.unstarted}; {len(r.errors)} errors {sorted(set(r.errors))[:3]}")


@contextmanager
def sqlite_database(n: int) -> Iterator[tuple[str, Callable[[], None]]]:
    with tempfile.TemporaryDirectory() as tmp:
        yield f"sqlite:///{tmp}/queue-{n}.sqlite", lambda: None  # the database is in the workers' processes


def postgres_databases(admin_url: str):
    """A context manager making a fresh database per N, with its server's counters: (transactions
    committed or rolled back, CPU seconds of its backends)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")

    @contextmanager
    def fresh(n: int) -> Iterator[tuple[str, Callable[[], tuple[int, float]]]]:
        name = f"openi2v_bench_{secrets.token_hex(4)}_{n}"
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))

        def server() -> tuple[int, float]:
            with admin.connect() as conn:
                xacts = conn.execute(text("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                                          "WHERE datname = :name"), {"name": name}).scalar_one()
                pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :name"),
                                    {"name": name}).scalars().all()
            return xacts, cpu_s(pids)

        try:
            yield admin_url.rsplit("/", 1)[0] + f"/{name}", server
        finally:
            with admin.connect() as conn:
                conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))

    return fresh


def run(name: str, fresh: Callable[[int], ContextManager[tuple[str, Callable]]]) -> list[Row]:
    with fresh(0) as (url, _):
        floors = round_trips(url)
    rows = []
    for n in WORKERS:
        with fresh(n) as (url, server):
            rows.append(measure(url, n, server))
    report(name, floors, rows)
    return rows


def main() -> None:
    started = time.time()
    print(f"{os.cpu_count()} cores; load average over the last minute before the run {os.getloadavg()[0]:.2f}")
    MP.set_forkserver_preload(["openi2v.store"])
    run("SQLite (WAL, a file in a temp dir)", sqlite_database)
    script = Path(__file__).resolve().parents[1] / "scripts" / "test-postgres.sh"
    found = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if found.returncode != 0:
        print(f"\nPostgreSQL unavailable (scripts/test-postgres.sh: {found.stderr.strip()[-200:]}): SQLite only")
        return
    admin_url = found.stdout.strip().splitlines()[-1]
    rows = run("PostgreSQL (local server, loopback TCP)", postgres_databases(admin_url))
    over = [r.n for r in rows if pct(r.claim_s, 0.99) > P99_LIMIT_S]
    if not over:
        print(f"\nPostgreSQL: all tried N ({', '.join(map(str, WORKERS))}) stayed under {P99_LIMIT_S * 1000:.0f} ms "
              "claim p99 (saturated)")
    else:
        below = [n for n in WORKERS if n < over[0]]
        print(f"\nPostgreSQL sustains up to N={below[-1] if below else 0} polling workers before claim p99 passes "
              f"{P99_LIMIT_S * 1000:.0f} ms (saturated; passed at {over[0]})")
    print(f"whole run {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
