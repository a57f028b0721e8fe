"""Engines and migrations. SQLite (WAL) by default; PostgreSQL by URL.

SQLite runs write transactions as ``BEGIN IMMEDIATE`` on their own engine, so a
read-then-write never dies with "database is locked"; reads use a second engine and
never wait on writers (WAL).
"""

from __future__ import annotations

import functools
import sqlite3
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Select, create_engine, event, literal, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def now() -> float:
    return time.time()


class Database:
    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            self._reader = _sqlite_engine(url, begin="BEGIN")
            self._writer = _sqlite_engine(url, begin="BEGIN IMMEDIATE")
        else:
            self._reader = self._writer = create_engine(url, pool_pre_ping=True, pool_size=10)
        self._plans: dict[Select, _Plan] = {}
        self._local = threading.local()

    def migrate(self) -> None:
        with self._writer.begin() as conn:
            cfg = _alembic_config()
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def revision(self) -> str | None:
        """The migration the database is at (None: none yet)."""
        with self._reader.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    @staticmethod
    @functools.cache
    def head_revision() -> str:
        """The migration this code needs."""
        return ScriptDirectory.from_config(_alembic_config()).get_current_head()

    @staticmethod
    @functools.cache
    def known_revisions() -> frozenset[str]:
        """Every migration this code has (a database at one of them but the head is behind it)."""
        return frozenset(r.revision for r in ScriptDirectory.from_config(_alembic_config()).walk_revisions())

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self._reader.connect() as conn:
            yield conn

    def fetch_one(self, query: Select, **params: Any) -> dict[str, Any] | None:
        """The first row of a prebuilt SELECT (parameters as ``bindparam`` names), or None.

        The hot reads (key lookup, result poll) come here. On SQLite the statement is
        compiled once and run on this thread's own sqlite3 connection, skipping
        SQLAlchemy's per-call machinery (~0.5 ms a query down to ~0.03 ms); column types
        still decode the values (JSON, booleans) through their result processors. Other
        databases answer over the network, so the usual execution path costs little there.
        """
        if not self.is_sqlite:
            with self._reader.connect() as conn:
                row = conn.execute(query, params).first()
            return None if row is None else dict(row._mapping)
        plan = self._plans.get(query)
        if plan is None:
            plan = self._plans[query] = _Plan.of(query, self._reader.dialect)
        conn = getattr(self._local, "conn", None)
        if conn is None:  # one autocommit connection per thread: each SELECT sees the latest commit
            conn = self._local.conn = _sqlite_connect(self.url)
        row = conn.execute(plan.sql, plan.bind(params)).fetchone()
        return None if row is None else plan.decode(row)

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any exception."""
        with self._writer.begin() as conn:
            yield conn

    def dispose(self) -> None:
        self._reader.dispose()
        self._writer.dispose()


def lock(conn: Connection, table, *where: Any) -> None:
    """Hold these rows against other writers until the transaction ends: FOR NO KEY UPDATE on
    PostgreSQL (other writers' foreign-key checks on them still pass); SQLite's BEGIN IMMEDIATE
    already holds the whole database."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(literal(1)).select_from(table).where(*where).with_for_update(key_share=True))


def insert_once(conn: Connection, table, unique: list[str], **values: Any) -> None:
    """INSERT unless a row with the same ``unique`` columns exists (idempotent on every dialect)."""
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    conn.execute(insert(table).values(**values).on_conflict_do_nothing(index_elements=unique))


@dataclass(frozen=True)
class _Plan:
    """A SELECT compiled for SQLite, with its parameter order and how to decode its row."""

    sql: str
    positions: tuple[str, ...]  # sqlite3 takes parameters by position
    names: tuple[str, ...]
    decoders: tuple[Callable[[Any], Any] | None, ...]
    defaults: dict[str, Any]  # values the statement carries itself (a LIMIT, a literal)

    @classmethod
    def of(cls, query: Select, dialect) -> "_Plan":
        compiled = query.compile(dialect=dialect)
        columns = list(query.selected_columns)
        return cls(str(compiled), tuple(compiled.positiontup), tuple(c.name for c in columns),
                   tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns),
                   dict(compiled.params))

    def bind(self, params: dict[str, Any]) -> tuple:
        merged = {**self.defaults, **params}
        return tuple(merged[name] for name in self.positions)

    def decode(self, row: tuple) -> dict[str, Any]:
        return {name: (decode(value) if decode else value)
                for name, decode, value in zip(self.names, self.decoders, row)}


def _sqlite_path(url: str) -> str:
    return url.split("///", 1)[-1]


def _configure_sqlite(dbapi_conn) -> None:
    dbapi_conn.isolation_level = None  # autocommit; write transactions issue BEGIN themselves
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "foreign_keys=ON", "busy_timeout=30000"):
        dbapi_conn.execute(f"PRAGMA {pragma}")


def _sqlite_connect(url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(_sqlite_path(url), timeout=30)
    _configure_sqlite(conn)
    return conn


def _sqlite_engine(url: str, begin: str) -> Engine:
    path = _sqlite_path(url)
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        _configure_sqlite(dbapi_conn)

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:
        conn.exec_driver_sql(begin)

    return engine
