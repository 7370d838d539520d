"""A case read with its request and steps, and a transition written, in the fewest round trips each
database allows: what an approver's request does on its way, where the ORM's statements cost more than
the work they ask of the database.

- Reading: on a SQLite file, one statement (the case, its request and its steps as one JSON array) on the
  connection of the file's writer for this loop (`SqliteWriter.read`), between its transactions, on the
  event loop (a read in WAL mode never waits for the writer, and takes microseconds, where a round trip to
  the async driver's thread costs far more under load; that connection's page cache survives its own
  commits, where another connection's would be stale after each); on
  PostgreSQL, one statement (the steps aggregated beside the case and its request) on a pooled
  connection's driver, for every case asked for while the previous such statement ran
  (`service.workflow.batches`).
- Writing (PostgreSQL): one statement whose parts (common table expressions) move the case from the
  version it was read at, insert its steps, audit rows and outbox events, resolve its stuck-approval
  exception with that exception's `exception.resolved` event, drop its inbox index rows and commit an
  approved transfer to its shipment. A statement is atomic: all of it is written or, when the case moved
  since it was read, none of it (`Stale`). Transitions handed over while a statement runs go together in
  the next one, grouped by shape (the case columns they set): a group's rows go as one array parameter a
  column, each row with its case's id, and only the rows of the cases that moved are written. A table's
  rows are one scan of one function, the unnested array of their case ids, each other column's value
  taken from its array by the row's number; the ids of the cases that moved filter that scan, which keeps
  the rows' order. Beyond its rows and its commit, a statement costs PostgreSQL mostly the start-up of
  its plan's nodes: one function scan a table, and no join or sort, keeps that small.
  The statement's text then depends on the shapes it holds, not on how many transitions: each pooled
  connection prepares it once, not once per batch size. A statement fails or commits as a whole: when
  one fails, its batch is written again one transition at a time, so that the failure is its own; a
  transition whose case did not move writes nothing and is told `Stale`, the others commit. Under load
  a round trip, which costs the client about as much as the statements' own work, then serves many
  approvals. A transition that writes new inbox index rows (an escalation) goes through the session
  instead (`write_in_session`). On SQLite the file's writer writes transitions
  (`service.workflow.writes.write_sqlite`), batched the same way.
- Reads and writes on PostgreSQL each keep their pooled connection while their batches follow one
  another (a checkout and a return cost the client about as much as a statement), and give it back
  once none waits.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Column, Table
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.base import aware
from service.db.engine import HeldDriverConnection, bound
from service.db.models import ApprovalCase, ApprovalCaseRole, ApprovalStep, AuditEntry, OutboxEvent
from service.db.sqlite_writer import SqliteWriter
from service.decisions.ids import new_decision_id
from service.workflow.batches import Batches
from service.workflow.exceptions import SYSTEM
from service.workflow.writes import (
    AUDIT_COLUMNS,
    EVENT_COLUMNS,
    STEP_COLUMNS,
    STUCK,
    Stale,
    Step,
    Transition,
    audit_values,
    event_values,
    role_rows,
    step_values,
)

_CASES: Table = ApprovalCase.__table__  # type: ignore[assignment]
_STEPS: Table = ApprovalStep.__table__  # type: ignore[assignment]
_AUDIT_LOG: Table = AuditEntry.__table__  # type: ignore[assignment]
_OUTBOX: Table = OutboxEvent.__table__  # type: ignore[assignment]
_ROLES: Table = ApprovalCaseRole.__table__  # type: ignore[assignment]
# the inbox rows' key columns a transition deletes by
_ROLE = ("case_id", "role", "created_at")
CASE_NAMES = tuple(c.name for c in _CASES.columns)
_TIMES = ("sla_due_at", "created_at", "updated_at", "closed_at")
_JSON = ("approvers", "escalation")
_REQUEST = ("id", "kind", "requested_by", "body", "approval", "shipment_id")
_CASE_SELECT = (
    "SELECT "
    + ", ".join(f"c.{name}" for name in CASE_NAMES)
    + ", "
    + ", ".join(f"r.{name}" for name in _REQUEST)
    + " FROM approval_cases c LEFT JOIN change_requests r ON r.id = c.subject WHERE c.id = "
)
_JSON_TEXT = (*_JSON, "body", "detail")  # JSON columns of the case, its request and its steps
_READ_TIMES = (*_TIMES, "at")  # times of the case and its steps
# a step's columns as both reads give them (`_step`, `_decode_sqlite` take them in this order)
_STEP_READ = ("id", "case_id", "at", "action", "actor", "role", "comment", "detail")


def _sqlite_values(prefix: str, names: tuple[str, ...]) -> str:
    """Columns `names` of table `prefix` as values of a JSON array: a JSON column's text as JSON (`json()`),
    a time with its offset (`_sqlite_utc`) and `sla_hours` as null (it comes beside the array: SQLite
    writes a REAL into JSON with 15 digits)."""
    return ", ".join(_sqlite_value(f"{prefix}.{n}", n) for n in names)


def _sqlite_value(column: str, name: str) -> str:
    if name in _JSON_TEXT:
        return f"json({column})"
    if name in _READ_TIMES:
        return _sqlite_utc(column)
    return "NULL" if name == "sla_hours" else column


def _sqlite_utc(column: str) -> str:
    """A stored time's text with its offset: SQLAlchemy's writes have none (`YYYY-MM-DD HH:MM:SS.ffffff`,
    in UTC), the SQLite writer's end in `+00:00`. Decoded then as aware times, which costs less than
    making each naive one aware after."""
    return f"iif(substr({column}, -6, 1) IN ('+', '-'), {column}, {column} || '+00:00')"


# One statement, one snapshot: the case, its request and its steps as one JSON array (the steps in id
# order, as the subquery gives them), decoded in one pass (`_SqliteRead`), where a column costs the driver
# a Python object of its own (and the steps a statement of their own)
_SQLITE_READ = (
    f"SELECT json_array({_sqlite_values('c', CASE_NAMES)}, {_sqlite_values('r', _REQUEST)}, "
    f"(SELECT json_group_array(json(x)) FROM (SELECT json_array({_sqlite_values('s', _STEP_READ)}) AS x "
    "FROM approval_steps s WHERE s.case_id = c.id ORDER BY s.id))), c.sla_hours "
    "FROM approval_cases c LEFT JOIN change_requests r ON r.id = c.subject WHERE c.id = ?"
)
# the ids through a subquery: the planner's estimate then does not depend on them, so PostgreSQL keeps
# the statement's generic plan after its first executions instead of planning it again for each batch's
# ids (a plan for a few ids looked cheaper than the generic one, but cost more to make than to run)
_PG_READ = (
    _CASE_SELECT.replace(" FROM approval_cases", ", (SELECT json_agg(json_build_array("
    + ", ".join(f"s.{n}" for n in _STEP_READ)
    + ") ORDER BY s.id) FROM approval_steps s WHERE s.case_id = c.id) FROM approval_cases")
    + "ANY(ARRAY(SELECT unnest($1::varchar[])))"
)  # fmt: skip

_NAMES = (
    "moved",
    "ids",
    "step",
    "audit",
    "events",
    "cleared",
    "resolved",
    "roles",
)  # no prefix of another
# a type's length (`VARCHAR(36)`): an array cast to it is checked element by element wherever the cast is
# evaluated, in a statement's rows for each row; a column's length is checked as its row is written
_UNSIZED = re.compile(r"\(\d+(, *\d+)?\)")
_LOST = ("08", "57")  # SQLSTATE classes: connection exception, operator intervention (a shutdown)
MAX_BATCH = 50  # transitions of one statement
Read = tuple[dict[str, Any], "RequestRow | None", list[Step]]


@dataclass(frozen=True, slots=True)
class RequestRow:
    """What the workflow reads of a case's request (`ChangeRequest`'s columns of these names), without an
    ORM instance's bookkeeping."""

    id: str
    kind: str
    requested_by: str
    body: dict[str, Any]
    approval: str
    shipment_id: str | None


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    return aware(value if isinstance(value, datetime) else datetime.fromisoformat(value))


def _json(value: Any) -> Any:
    return msgspec.json.decode(value) if isinstance(value, str | bytes) else value


def _decode(row: Any, steps: Any) -> Read:
    """A row of `_PG_READ`: the driver gives its timestamptz columns as aware datetimes and its json
    columns decoded (the engine's codec); the steps come as one JSON array, their times as text."""
    n = len(CASE_NAMES)
    case = dict(zip(CASE_NAMES, row[:n], strict=True))
    request = None if row[n] is None else RequestRow(*row[n : n + len(_REQUEST)])
    return case, request, [_step(s) for s in steps]


_OptionalTime = datetime | None
_SqliteStep = tuple[int, str, datetime, str, str, str | None, str | None, Any]
# the columns of `_SQLITE_READ`'s array (`CASE_NAMES`, `_REQUEST`, the steps); `sla_hours` comes apart
_SqliteRead = tuple[
    str, str, str, str, str, str, Any, int, Any, int, None, _OptionalTime, _OptionalTime, _OptionalTime,
    _OptionalTime, str | None, int,
    str | None, str | None, str | None, Any, str | None, str | None,
    list[_SqliteStep],
]  # fmt: skip
_sqlite_read = msgspec.json.Decoder(_SqliteRead).decode


def _decode_sqlite(row: tuple[str, float | None]) -> Read:
    found: Any = _sqlite_read(row[0])
    n = len(CASE_NAMES)
    case: dict[str, Any] = dict(zip(CASE_NAMES, found[:n], strict=True))
    case["sla_hours"] = row[1]
    request = None if found[n] is None else RequestRow(*found[n : n + len(_REQUEST)])
    steps = [
        Step(case_id, at, action, actor, role, comment, detail, step_id)
        for step_id, case_id, at, action, actor, role, comment, detail in found[-1]
    ]
    return case, request, steps


def _select(connection: sqlite3.Connection, case_id: str) -> Read | None:
    row = connection.execute(_SQLITE_READ, (case_id,)).fetchone()
    return None if row is None else _decode_sqlite(row)


def _step(s: Any) -> Step:
    step_id, case_id, at, action, actor, role, comment, detail = s
    at = _time(at)
    assert at is not None  # a step's time is not null
    return Step(case_id, at, action, actor, role, comment, _json(detail), step_id)


class CaseStore:
    """Reads (and on PostgreSQL writes) cases for one app's engine; `usable` is False where neither way
    applies (an in-memory SQLite database: the ORM path serves it)."""

    def __init__(
        self, engine: AsyncEngine, sqlite_path: str | None, writer: SqliteWriter | None = None
    ) -> None:
        self.engine = engine
        self.writer = writer  # the SQLite file's: reads go on its connection (see `SqliteWriter.read`)
        self.dialect = engine.dialect
        self._arrays: dict[tuple[str, str], tuple[str, Callable[[Any], Any] | None]] = {}
        self.postgresql = engine.dialect.name == "postgresql"
        self.sqlite_path = sqlite_path
        self.usable = self.postgresql or sqlite_path is not None
        self._reader: sqlite3.Connection | None = None
        # one statement must not update a row twice: two transitions of a case wait for different batches
        self._writes = Batches(self._write_batch, MAX_BATCH, key=lambda t: t.case["id"])
        self._reads = Batches(self._read_batch, MAX_BATCH)
        self._writing, self._reading = HeldDriverConnection(engine), HeldDriverConnection(engine)

    def close(self) -> None:
        reader, self._reader = self._reader, None
        if reader is not None:
            with contextlib.suppress(sqlite3.Error):
                reader.close()

    async def read(self, case_id: str) -> Read | None:
        """The case (as `case_from_row` gives it), its request and its steps; None for an unknown case."""
        if self.postgresql:
            return await self._reads.submit(case_id)
        try:
            return self._read_sqlite(case_id)
        except sqlite3.Error:
            self.close()  # a broken connection is opened again next time
            raise

    @contextlib.asynccontextmanager
    async def _driver(self, held: HeldDriverConnection, batches: Batches[Any, Any]) -> AsyncIterator[Any]:
        """A pooled connection's driver (asyncpg) connection for a batch of `batches`, kept while their
        batches follow one another (under load a checkout from the pool and its return cost the client
        about as much as a batch's statement) and given back once none waits. The pool's own handling of
        a lost connection does not see statements sent to the driver: a failure that leaves the
        connection in doubt (lost, or interrupted mid-statement) discards it here, so that the pool
        replaces it, and a lost connection is told as `ConnectionError` (answered 503, as the session's
        are)."""
        try:
            raw = await held.get()
            try:
                yield raw
            except BaseException as error:
                state = getattr(error, "sqlstate", None)
                if state is None or state[:2] in _LOST:
                    await held.discard()
                if _lost(error, state):
                    raise ConnectionError("the database is not answering") from error
                raise
        finally:
            if not batches.waiting:
                await held.close()

    async def _read_batch(self, case_ids: list[str]) -> list[Read | None]:
        async with self._driver(self._reading, self._reads) as raw:
            rows = await raw.fetch(_PG_READ, list(dict.fromkeys(case_ids)))
        found = {row[0]: _decode(row, row[-1] or ()) for row in rows}
        return [found.get(case_id) for case_id in case_ids]

    def _read_sqlite(self, case_id: str) -> Read | None:
        if self.writer is not None:
            try:
                return self.writer.read(lambda connection: _select(connection, case_id))
            except sqlite3.Error:
                pass  # e.g. a database being recovered: the writer's connection waits for no lock, this one does
        reader = self._reader
        if reader is None:
            assert self.sqlite_path is not None
            reader = sqlite3.connect(self.sqlite_path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=1000")
            self._reader = reader
        return _select(reader, case_id)

    async def write(self, t: Transition) -> None:
        """PostgreSQL: write `t`, in the next batch; raises `Stale` (nothing written) when the case moved."""
        if not await self._writes.submit(t):
            raise Stale

    async def _write_batch(self, batch: list[Transition]) -> list[bool]:
        # the transitions of one shape together, the shapes in a fixed order, each group's rows as arrays
        # (one parameter a column): the statement's text then depends only on which shapes it holds, not
        # on how many transitions: each connection prepares it once, and after its first executions
        # PostgreSQL runs it on a generic plan instead of planning it again
        groups: dict[tuple[Any, ...], list[Transition]] = {}
        for t in batch:
            groups.setdefault(_shape(t), []).append(t)
        params: list[Any] = []
        parts = [self._group(g, groups[shape], params) for g, shape in enumerate(sorted(groups))]
        moved = ", ".join(f"(SELECT ids FROM c_ids_{g})" for g in range(len(groups)))
        sql = "WITH " + ", ".join(parts) + " SELECT " + moved
        async with self._driver(self._writing, self._writes) as raw:
            row = await raw.fetchrow(sql, *params)
        written = {case_id for ids in row for case_id in ids or ()}
        return [t.case["id"] in written for t in batch]

    def _array(self, column: Column[Any]) -> tuple[str, Callable[[Any], Any] | None]:
        """The SQL type of an array of `column`'s values, without the column's length (`_UNSIZED`), and
        how a value goes to the driver (`bound`)."""
        try:
            return self._arrays[column.table.name, column.name]
        except KeyError:
            found = self._arrays[column.table.name, column.name] = (
                _UNSIZED.sub("", column.type.compile(dialect=self.dialect)) + "[]",
                bound(column.type, self.dialect),
            )
            return found

    def _group(self, g: int, ts: list[Transition], params: list[Any]) -> str:
        """The common table expressions of transitions `ts` (one shape), the `g`th group of their
        statement (names end in g). Rows go as arrays, one per column, with the id of their case; only the
        rows of the cases that moved are written, in the order given (the ids they get follow it)."""

        def rows(columns: tuple[Column[Any], ...], values: list[tuple[Any, ...]]) -> tuple[str, list[str]]:
            """`values` (rows of `columns`, the first a case id) as arrays: the FROM item of their rows
            (`v`: `v.case_id` and the row's number, `v.n`, by which they are in order) and each column's
            value in row `v.n`. One function a scan: each function of a scan keeps its rows and state of
            its own; the scan's estimate is its function's, the first column's array's, given through a
            subquery as the read's ids (`_PG_READ`): a plan for the batch given would be made afresh for
            every small batch."""
            arrays = []
            by_column = zip(*values, strict=True) if values else [()] * len(columns)
            for column, found in zip(columns, by_column, strict=True):
                array_type, process = self._array(column)
                params.append(
                    list(found) if process is None else [v if v is None else process(v) for v in found]
                )
                arrays.append(f"${len(params)}::{array_type}")
            return f"unnest((SELECT {arrays[0]})) WITH ORDINALITY AS v(case_id, n)", [
                "v.case_id",
                *(f"({array})[v.n]" for array in arrays[1:]),
            ]

        def p(value: Any) -> str:
            params.append(value)
            return f"${len(params)}"

        names = tuple(ts[0].values)
        case_id = _CASES.c.id
        # a group's transitions set the same columns in the same order (`_shape`)
        cases = [(t.case["id"], t.case["version"], *t.values.values()) for t in ts]
        source, (k_id, k_version, *values) = rows(
            (case_id, _CASES.c.version, *(_CASES.c[name] for name in names)), cases
        )
        sets = ", ".join(f"{name} = {value}" for name, value in zip(names, values, strict=True))
        parts = [
            f"c_moved AS (UPDATE approval_cases AS c SET {sets} FROM {source} "
            f"WHERE c.id = {k_id} AND c.version = {k_version} RETURNING c.id)",
            "c_ids AS (SELECT array_agg(id) AS ids FROM c_moved)",
        ]
        # a filter on the scan of the rows, that keeps their order (no join, and no sort after it)
        moved = "v.case_id = ANY ((SELECT ids FROM c_ids)::VARCHAR[])"
        steps = [step_values(s) for t in ts for s in t.steps]
        audits = [(t.case["id"], *audit_values(a)) for t in ts for a in t.audits]
        events = [(t.case["id"], *event_values(e)) for t in ts for e in t.events]
        for part, table, written, listed in (
            ("c_step", _STEPS, STEP_COLUMNS, steps),
            ("c_audit", _AUDIT_LOG, AUDIT_COLUMNS, audits),
            ("c_events", _OUTBOX, EVENT_COLUMNS, events),
        ):
            if not listed:  # a transition has its step and audit row; it may have no event
                continue
            columns = tuple(table.c[name] for name in written)
            if table is not _STEPS:  # the case's id beside the rows, to tell whether it moved
                columns = (case_id, *columns)
            source, values = rows(columns, listed)
            if table is not _STEPS:
                values = values[1:]
            parts.append(
                f"{part} AS (INSERT INTO {table.name} ({', '.join(written)}) "
                f"SELECT {', '.join(values)} FROM {source} WHERE {moved} ORDER BY v.n)"
            )
        cleared = [t for t in ts if t.clear_stuck]
        if cleared:
            # the partial unique index allows one unresolved record per (kind, key): one event a case at
            # most; its payload is `resolved_payload`'s
            ids = p([t.case["id"] for t in cleared])
            times, event_ids = p([t.now for t in cleared]), p([new_decision_id() for _ in cleared])
            stamps = p([t.now.isoformat() for t in cleared])
            at = f"({times}::timestamptz[])[v.n]"
            parts.append(
                f"c_cleared AS (UPDATE exception_records AS e SET state = 'resolved', resolved_at = {at}, "
                f"resolved_by = {p(SYSTEM)}, updated_at = {at} "
                f"FROM unnest((SELECT {ids}::varchar[])) WITH ORDINALITY AS v(case_id, n) "
                f"WHERE e.kind = {p(STUCK)} AND e.key = v.case_id AND e.state <> 'resolved' AND {moved} "
                f"RETURNING e.id, e.location, e.sku, v.case_id, {at} AS at, "
                f"({event_ids}::varchar[])[v.n] AS event_id, ({stamps}::text[])[v.n] AS stamp)"
            )
            parts.append(
                "c_resolved AS (INSERT INTO outbox_events (event_id, kind, subject, payload, created_at) "
                "SELECT event_id, 'exception.resolved', 'exception:' || id, "
                f"json_build_object('exception', json_build_object('id', id, 'kind', {p(STUCK)}::text, "
                f"'key', case_id, 'state', 'resolved', 'resolved_by', {p(SYSTEM)}::text, "
                "'location', location, 'sku', sku, 'resolved_at', stamp)), at FROM c_cleared)"
            )
        if ts[0].roles is not None:
            if any(t.roles for t in ts):
                raise ValueError("a transition writing inbox index rows goes through the session")
            # by their keys, read from the case (`role_rows`): one seek of the table's key per role
            roles = [(r["case_id"], r["role"], r["created_at"]) for t in ts for r in role_rows(t.case)]
            source, (_, role, created_at) = rows(tuple(_ROLES.c[c] for c in _ROLE), roles)
            parts.append(
                f"c_roles AS (DELETE FROM approval_case_roles AS r USING {source} "
                f"WHERE r.role = {role} AND r.status = 'pending' AND r.created_at = {created_at} "
                f"AND r.case_id = v.case_id AND {moved})"
            )
        text = ", ".join(parts)
        for name in _NAMES:
            text = text.replace(f"c_{name}", f"c_{name}_{g}")
        return text


def _shape(t: Transition) -> tuple[Any, ...]:
    """What of `t` decides the text of its group in a statement (`CaseStore._group`), as a sortable key."""
    return (tuple(t.values), t.roles is not None)


def writes_in_one_statement(store: CaseStore | None, t: Transition) -> bool:
    """Whether `store` writes `t` in one statement (else the session does)."""
    return store is not None and store.postgresql and not t.roles


def _lost(error: BaseException, state: str | None) -> bool:
    if state is not None:
        return state[:2] in _LOST
    if isinstance(error, OSError | TimeoutError):
        return True
    # the driver's own: its interface errors but bad parameters, and a protocol state it cannot go on from
    # (a backend ended while the connection sat in the pool can surface as either)
    names = {kind.__name__ for kind in type(error).__mro__}
    return ("InterfaceError" in names and "DataError" not in names) or "InternalClientError" in names
