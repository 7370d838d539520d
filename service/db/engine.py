"""Async engine and session factory for SQLite (aiosqlite) and PostgreSQL (asyncpg)."""

from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from itertools import chain
from pathlib import Path
from typing import Any

import msgspec
from sqlalchemy import JSON, DateTime, Table, event
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.util import greenlet_spawn

from service.settings import DatabaseSettings

# host parameters one SQLite statement may hold (999 before SQLite 3.32)
_SQLITE_MAX_VARIABLES = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999
# how long a SQLite writer waits for the write lock that another connection holds
SQLITE_BUSY_TIMEOUT_SECONDS = 30.0
POOL_RECYCLE_SECONDS = 1800  # a PostgreSQL connection older than this is closed at its next checkout


def sqlite_pragmas(dbapi_connection: Any, _record: Any = None) -> None:
    """The settings of every connection to a SQLite database (the engine's and the writers' of
    `service.db.sqlite_writer`)."""
    cursor = dbapi_connection.cursor()
    # WAL lets readers run beside the single writer; busy_timeout makes writers from several
    # worker processes wait for the lock instead of failing at once.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


_encode = msgspec.json.Encoder().encode


def _json(value: Any) -> str:
    # JSON columns (decision log, journal) are written on the request loop: msgspec encodes several times faster
    return _encode(value).decode()


_decode = msgspec.json.decode


def json_value(text: str) -> Any:
    """A JSON column's text as `json.loads` gives it, decoded by msgspec (several times faster) where it
    can be: msgspec refuses what it would not give the same (a number beyond a float's range, which
    `json.loads` makes infinite; an escaped lone surrogate) and gives the same values for the rest
    (duplicate keys, the last one kept, in the first one's place; integers of any length; floats
    correctly rounded). What it refuses, or nests too deep for it, `json.loads` decodes."""
    try:
        return _decode(text)
    except (msgspec.DecodeError, RecursionError):
        return json.loads(text)


def _sqlite_datetime(value: Any) -> Any:
    """A datetime as the text the stdlib SQLite driver's default adapter makes of it (`isoformat(" ")`),
    made here: the driver looks the adapter up and calls it per value. At an offset of zero through
    msgspec's encoder (the same digits, a few times faster than `isoformat`)."""
    if not isinstance(value, datetime):
        return value
    text = _encode(value).decode()  # '"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"' at an offset of zero
    if text[-2] == "Z":
        return f"{text[1:11]} {text[12:-2]}+00:00"
    return value.isoformat(" ")


# A NULL for the stdlib SQLite driver that costs it no adapter look-up: the driver binds a float as a double
# directly, and SQLite stores a NaN double as NULL. None is looked up among the adapters at every bind,
# about a microsecond per NULL value.
SQLITE_NULL = float("nan")


def bound(column_type: Any, dialect: Dialect) -> Callable[[Any], Any] | None:
    """How a value of `column_type` goes to `dialect`'s driver (JSON through the engine's encoder, a
    datetime on SQLite as the text the driver's adapter would make of it); None when it goes as it is."""
    if isinstance(column_type, JSON):
        return _json
    if dialect.name == "sqlite" and isinstance(column_type, DateTime):
        return _sqlite_datetime
    processor: Callable[[Any], Any] | None = column_type.bind_processor(dialect)
    return processor


def as_sqlalchemy_binds(column_type: Any, dialect: Dialect) -> Callable[[Any], Any]:
    """How SQLAlchemy itself sends a value of `column_type` to `dialect`'s driver (on SQLite a datetime
    as its DATETIME text, `YYYY-MM-DD HH:MM:SS.ffffff`, unlike `bound`): for a raw statement whose values
    must match rows SQLAlchemy wrote, or be compared as its statements compare them."""
    process: Callable[[Any], Any] | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return _as_it_is if process is None else process


def _as_it_is(value: Any) -> Any:
    return value


def create_engine(settings: DatabaseSettings) -> AsyncEngine:
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(url, echo=settings.echo, json_serializer=_json)
        event.listen(engine.sync_engine, "connect", sqlite_pragmas)
        return engine
    # a fixed pool that keeps its connections: overflow connections would be opened and closed again
    # under every burst (a TLS-less connect still costs the server a process start), and a liveness
    # ping per checkout is a round trip per transaction. A connection the server dropped fails its
    # statement once (the pool then opens fresh ones); `pool_recycle` retires connections before the
    # usual idle timeouts of proxies and load balancers do.
    return create_async_engine(
        url,
        echo=settings.echo,
        json_serializer=_json,
        json_deserializer=json_value,  # the driver's codec of json and jsonb columns decodes with it
        pool_size=2 * settings.pool_size,
        max_overflow=0,
        pool_recycle=POOL_RECYCLE_SECONDS,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


class HeldConnection:
    """One connection kept open for a background writer (the decision log, the stock journal): a batch
    then costs its transaction only, not a pool checkout, a liveness ping and a return. A batch that
    fails drops the connection, so the next one starts on a fresh connection."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._connection: AsyncConnection | None = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        connection = self._connection
        if connection is None or connection.closed or connection.invalidated:
            connection = self._connection = await self.engine.connect()
        try:
            async with connection.begin():
                yield connection
        except BaseException:
            self._connection = None
            with contextlib.suppress(Exception):
                await connection.close()
            raise

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            await connection.close()


def connection_lost(error: BaseException) -> bool:
    """Whether a PostgreSQL driver error leaves its connection unusable or its state unknown (the server
    ended the session, the socket broke, a statement was cut off, or the driver saw a protocol step out of
    turn: asyncpg's "another operation is in progress"). An error the server reported for a statement
    (bad data, a constraint) leaves the connection usable."""
    import asyncpg  # type: ignore[import-untyped]  # PostgreSQL only, no type information

    if isinstance(error, (ConnectionError, OSError, TimeoutError, asyncpg.PostgresConnectionError)):
        return True
    if isinstance(error, (asyncpg.exceptions.OperatorInterventionError, asyncpg.InterfaceError)):
        return True
    if isinstance(error, asyncpg.exceptions.InternalClientError):
        return True
    return not isinstance(error, asyncpg.PostgresError)


class HeldDriverConnection:
    """One PostgreSQL driver (asyncpg) connection taken from the engine's pool and kept by a background
    writer, used outside any SQLAlchemy transaction (each statement commits on its own unless the writer
    opens a driver transaction). `discard` gives it back invalidated, so the next `get` opens a fresh one."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._proxied: Any = None

    async def get(self) -> Any:
        """The asyncpg connection (opened at the first call and after `discard`)."""
        if self._proxied is None:
            self._proxied = await self.engine.raw_connection()
        return self._proxied.driver_connection

    @contextlib.asynccontextmanager
    async def using(self) -> AsyncIterator[Any]:
        """The asyncpg connection for one write; an error that leaves it lost or in an unknown state (see
        `connection_lost`, or a cancellation mid-statement) discards it, so the next write opens a fresh one."""
        try:
            yield await self.get()
        except BaseException as error:
            if not isinstance(error, Exception) or connection_lost(error):
                await self.discard()
            raise

    async def discard(self) -> None:
        proxied, self._proxied = self._proxied, None
        if proxied is not None:
            with contextlib.suppress(Exception):
                await greenlet_spawn(proxied.invalidate)

    async def close(self) -> None:
        proxied, self._proxied = self._proxied, None
        if proxied is not None:
            with contextlib.suppress(Exception):
                await greenlet_spawn(proxied.close)


class BatchInsert:
    """An INSERT of many rows given as tuples in `columns` order, for the background writers (decision log,
    stock journal): the statement is compiled once per dialect and each value goes through its column
    type's own bind processor (JSON columns through the engine's msgspec encoder), which is what a Core
    executemany does per row, without building and reading a parameter dictionary per row."""

    def __init__(self, table: Table, columns: Sequence[str]) -> None:
        self.table = table
        self.columns = tuple(columns)
        # dialect name -> (SQL, per compiled parameter: its index in a row and its processor)
        self._compiled: dict[str, tuple[str, list[tuple[int, Callable[[Any], Any] | None]]]] = {}
        self._multi: dict[tuple[str, int], str] = {}  # (single-row SQL, rows) -> multi-row SQL

    def _for(self, dialect: Dialect) -> tuple[str, list[tuple[int, Callable[[Any], Any] | None]]]:
        found = self._compiled.get(dialect.name)
        if found is None:
            compiled = self.table.insert().compile(dialect=dialect, column_keys=list(self.columns))
            order = list(compiled.positiontup or [])
            if sorted(order) != sorted(self.columns):
                raise ValueError(f"{self.table.name}: compiled parameters {order} are not {self.columns}")
            slots: list[tuple[int, Callable[[Any], Any] | None]] = []
            for name in order:
                slots.append((self.columns.index(name), bound(self.table.c[name].type, dialect)))
            found = (str(compiled), slots)
            self._compiled[dialect.name] = found
        return found

    def prepared(self, dialect: Dialect, rows: Sequence[Sequence[Any]]) -> tuple[str, list[tuple[Any, ...]]]:
        """The single-row INSERT and the rows' values as the driver takes them (column types applied; on
        SQLite a NULL as `SQLITE_NULL`)."""
        sql, slots = self._for(dialect)
        null = SQLITE_NULL if dialect.name == "sqlite" else None
        return sql, [
            tuple([null if (v := row[i]) is None else v if p is None else p(v) for i, p in slots])
            for row in rows
        ]

    def sqlite_statements(
        self, dialect: Dialect, rows: Sequence[Sequence[Any]]
    ) -> list[tuple[str, tuple[Any, ...]]]:
        """The rows as few multi-row statements with their parameters (for SQLite).

        An executemany steps once per row, and a driver working in another thread gives the interpreter
        back to the event loop and waits to take it again at every step, which under load costs far more
        than the insert itself (and holds the database's write lock all the while)."""
        return self.multi_row(*self.prepared(dialect, rows))

    def multi_row(self, sql: str, prepared: Sequence[tuple[Any, ...]]) -> list[tuple[str, tuple[Any, ...]]]:
        """Prepared rows (see `prepared`) as few multi-row statements with their parameters (SQLite)."""
        per_statement = max(1, _SQLITE_MAX_VARIABLES // max(1, len(self.columns)))
        return [
            (self._rows_sql(sql, len(chunk)), tuple(chain.from_iterable(chunk)))
            for chunk in (prepared[i : i + per_statement] for i in range(0, len(prepared), per_statement))
        ]

    def write_sqlite(
        self, connection: sqlite3.Connection, sql: str, prepared: Sequence[tuple[Any, ...]]
    ) -> None:
        """Prepared rows (see `prepared`) inserted through a stdlib SQLite connection, as `multi_row`
        statements."""
        for statement in self.multi_row(sql, prepared):
            connection.execute(*statement)

    async def execute(self, connection: AsyncConnection, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        if connection.dialect.name == "sqlite":
            for sql, parameters in self.sqlite_statements(connection.dialect, rows):
                await connection.exec_driver_sql(sql, parameters)
            return
        sql, prepared = self.prepared(connection.dialect, rows)
        await connection.exec_driver_sql(sql, prepared)

    async def copy_driver(
        self, driver_connection: Any, dialect: Dialect, rows: Sequence[Sequence[Any]]
    ) -> None:
        """PostgreSQL: the rows through one COPY (asyncpg's binary copy) on an asyncpg connection instead of
        an INSERT per row: the database parses and plans nothing per row, and the rows go in one stream.
        One COPY is atomic; outside a transaction block it commits on its own."""
        if not rows:
            return
        _, slots = self._for(dialect)
        _, prepared = self.prepared(dialect, rows)
        await driver_connection.copy_records_to_table(
            self.table.name, records=prepared, columns=[self.columns[i] for i, _ in slots]
        )

    def _rows_sql(self, sql: str, count: int) -> str:
        """The compiled single-row INSERT with `count` rows of placeholders."""
        found = self._multi.get((sql, count))
        if found is None:
            head, _, group = sql.rpartition(" VALUES ")
            found = f"{head} VALUES {', '.join([group] * count)}"
            if len(self._multi) >= 64:  # a batch of hundreds of rows makes a long statement
                self._multi.clear()
            self._multi[(sql, count)] = found
        return found
