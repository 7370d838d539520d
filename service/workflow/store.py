"""A case read with its request and steps, and a transition written, in the fewest round trips each
database allows: what an approver's request does on its way, where the ORM's statements cost more than
the work they ask of the database.

- Reading: on a SQLite file, two statements on a connection of this process' own, on the event loop (a
  read in WAL mode never waits for the writer, and takes microseconds, where a round trip to the async
  driver's thread costs far more under load); on PostgreSQL, one statement (the steps aggregated beside
  the case and its request) on a pooled connection's driver, for every case asked for while the
  previous such statement ran (`service.workflow.batches`).
- Writing (PostgreSQL): one statement whose parts (common table expressions) move the case from the
  version it was read at, insert its step, audit row and outbox events, resolve its stuck-approval
  exception with that exception's `exception.resolved` event, drop its inbox index rows and commit an
  approved transfer to its shipment. A statement is atomic: all of it is written or, when the case moved
  since it was read, none of it (`Stale`). Transitions handed over while a statement runs go together in
  the next one, each transition's expressions named apart (a statement fails or commits as a whole:
  when one fails, its batch is written again one transition at a time, so that the failure is its own;
  a transition whose case did not move writes nothing and is told `Stale`, the others commit). Under
  load a round trip, which costs the client about as much as the statements' own work, then serves many
  approvals. A transition that writes new inbox index rows (an escalation) goes through the session
  instead (`write_in_session`). On SQLite the file's writer writes transitions
  (`service.workflow.writes.write_sqlite`), batched the same way.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from service.db.base import aware
from service.db.engine import bound
from service.db.models import ApprovalCase, ApprovalStep
from service.decisions.ids import new_decision_id
from service.workflow.batches import Batches
from service.workflow.exceptions import SYSTEM
from service.workflow.writes import STUCK, Stale, Step, Transition, case_binds, role_rows

_CASES: Table = ApprovalCase.__table__  # type: ignore[assignment]
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
_SQLITE_CASE = _CASE_SELECT + "?"
_SQLITE_STEPS = (
    "SELECT id, case_id, at, action, actor, role, comment, detail FROM approval_steps "
    "WHERE case_id = ? ORDER BY id"
)
_PG_READ = (
    _CASE_SELECT.replace(" FROM approval_cases", ", (SELECT json_agg(json_build_array(s.id, s.case_id, s.at, "
    "s.action, s.actor, s.role, s.comment, s.detail) ORDER BY s.id) FROM approval_steps s "
    "WHERE s.case_id = c.id) FROM approval_cases")
    + "ANY($1::varchar[])"
)  # fmt: skip

_NAMES = (
    "moved",
    "step",
    "audit",
    "events",
    "cleared",
    "resolved",
    "roles",
)  # no prefix of another
_LOST = ("08", "57")  # SQLSTATE classes: connection exception, operator intervention (a shutdown)
MAX_BATCH = 50  # transitions of one statement (about 30 parameters each, of at most 32,767)
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
    n = len(CASE_NAMES)
    case = dict(zip(CASE_NAMES, row[:n], strict=True))
    for key in _TIMES:
        case[key] = _time(case[key])
    for key in _JSON:
        case[key] = _json(case[key])
    found = dict(zip(_REQUEST, row[n : n + len(_REQUEST)], strict=True))
    request = None
    if found["id"] is not None:
        found["body"] = _json(found["body"])
        request = RequestRow(**found)
    return case, request, [_step(s) for s in steps]


def _step(s: Any) -> Step:
    step_id, case_id, at, action, actor, role, comment, detail = s
    at = _time(at)
    assert at is not None  # a step's time is not null
    return Step(case_id, at, action, actor, role, comment, _json(detail), step_id)


class CaseStore:
    """Reads (and on PostgreSQL writes) cases for one app's engine; `usable` is False where neither way
    applies (an in-memory SQLite database: the ORM path serves it)."""

    def __init__(self, engine: AsyncEngine, sqlite_path: str | None) -> None:
        self.engine = engine
        self.dialect = engine.dialect
        self._binds = case_binds(engine.dialect)
        self.postgresql = engine.dialect.name == "postgresql"
        self.sqlite_path = sqlite_path
        self.usable = self.postgresql or sqlite_path is not None
        self._reader: sqlite3.Connection | None = None
        # one statement must not update a row twice: two transitions of a case wait for different batches
        self._writes = Batches(self._write_batch, MAX_BATCH, key=lambda t: t.case["id"])
        self._reads = Batches(self._read_batch, MAX_BATCH)

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
    async def _driver(self) -> AsyncIterator[Any]:
        """A pooled connection's driver (asyncpg) connection. The pool's own handling of a lost
        connection does not see statements sent to the driver: a failure that leaves the connection in
        doubt (lost, or interrupted mid-statement) invalidates it here, so that the pool replaces it,
        and a lost connection is told as `ConnectionError` (answered 503, as the session's are)."""
        async with self.engine.connect() as connection:
            raw = (await connection.get_raw_connection()).driver_connection
            assert raw is not None
            try:
                yield raw
            except BaseException as error:
                state = getattr(error, "sqlstate", None)
                if state is None or state[:2] in _LOST:
                    await connection.invalidate()
                if _lost(error, state):
                    raise ConnectionError("the database is not answering") from error
                raise

    async def _read_batch(self, case_ids: list[str]) -> list[Read | None]:
        async with self._driver() as raw:
            rows = await raw.fetch(_PG_READ, list(dict.fromkeys(case_ids)))
        found = {row[0]: _decode(row, row[-1] or ()) for row in rows}
        return [found.get(case_id) for case_id in case_ids]

    def _read_sqlite(self, case_id: str) -> Read | None:
        reader = self._reader
        if reader is None:
            assert self.sqlite_path is not None
            reader = sqlite3.connect(self.sqlite_path, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=1000")
            self._reader = reader
        # one snapshot for both statements
        reader.execute("BEGIN")
        try:
            row = reader.execute(_SQLITE_CASE, (case_id,)).fetchone()
            steps = [] if row is None else reader.execute(_SQLITE_STEPS, (case_id,)).fetchall()
        finally:
            reader.execute("COMMIT")
        return None if row is None else _decode(row, steps)

    async def write(self, t: Transition) -> None:
        """PostgreSQL: write `t`, in the next batch; raises `Stale` (nothing written) when the case moved."""
        if not await self._writes.submit(t):
            raise Stale

    async def _write_batch(self, batch: list[Transition]) -> list[bool]:
        # the transitions of one shape together, the shapes in a fixed order: the statement's text then
        # depends only on how many of each shape it holds, so the driver's cache of prepared statements
        # finds it again (in the order given, nearly every batch would be a text of its own, prepared anew)
        order = sorted(range(len(batch)), key=lambda i: _shape(batch[i]))
        params: list[Any] = []
        parts = [self._parts(batch[i], n, params) for n, i in enumerate(order)]
        counts = ", ".join(f"(SELECT count(*) FROM c_moved_{n})" for n in range(len(batch)))
        sql = "WITH " + ", ".join(parts) + " SELECT " + counts
        async with self._driver() as raw:
            row = await raw.fetchrow(sql, *params)
        written = [False] * len(batch)
        for n, i in enumerate(order):
            written[i] = row[n] == 1
        return written

    def _parts(self, t: Transition, n: int, params: list[Any]) -> str:
        """The common table expressions of transition `t`, the `n`th of its statement (names end in n)."""

        def p(value: Any, column: Any = None) -> str:
            if column is not None and value is not None:
                process = bound(column.type, self.dialect)
                value = value if process is None else process(value)
            params.append(value)
            return f"${len(params)}"

        sets = ", ".join(f"{name} = {p(self._binds(name, value))}" for name, value in t.values.items())
        case_id = p(t.case["id"])
        parts = [
            f"c_moved AS (UPDATE approval_cases SET {sets} WHERE id = {case_id} "
            f"AND version = {p(t.case['version'])} RETURNING id)"
        ]
        json_type = ApprovalStep.__table__.c.detail
        steps = ", ".join(
            f"({i}, {p(s.at)}::timestamptz, {p(s.action)}, {p(s.actor)}, {p(s.role)}::varchar, "
            f"{p(s.comment)}::text, {p(s.detail, json_type)}::json)"
            for i, s in enumerate(t.steps)
        )
        # ordered by their place in the transition: their ids (the order they are read in) follow it
        parts.append(
            "c_step AS (INSERT INTO approval_steps (case_id, at, action, actor, role, comment, detail) "
            "SELECT c_moved.id, v.at, v.action, v.actor, v.role, v.comment, v.detail FROM c_moved, "
            f"(VALUES {steps}) AS v(n, at, action, actor, role, comment, detail) ORDER BY v.n)"
        )
        audits = ", ".join(
            f"({i}, {p(a['at'])}::timestamptz, {p(a['actor'])}, {p(a['action'])}, {p(a['subject'])}, "
            f"{p(a['detail'], json_type)}::json, {p(a['note'])}::text)"
            for i, a in enumerate(t.audits)
        )
        parts.append(
            "c_audit AS (INSERT INTO audit_log (at, actor, action, subject, detail, note) "
            "SELECT v.at, v.actor, v.action, v.subject, v.detail, v.note FROM c_moved, "
            f"(VALUES {audits}) AS v(n, at, actor, action, subject, detail, note) ORDER BY v.n)"
        )
        if t.events:
            rows = ", ".join(
                f"({p(e['event_id'])}, {p(e['kind'])}, {p(e['subject'])}, {p(e['payload'], json_type)}::json, "
                f"{p(e['created_at'])}::timestamptz)"
                for e in t.events
            )
            parts.append(
                "c_events AS (INSERT INTO outbox_events (event_id, kind, subject, payload, created_at) "
                f"SELECT v.* FROM (VALUES {rows}) AS v, c_moved)"
            )
        if t.clear_stuck:
            # each use of a value is a parameter of its own: PostgreSQL deduces one type per parameter
            now, key = t.now, t.case["id"]
            parts.append(
                f"c_cleared AS (UPDATE exception_records SET state = 'resolved', resolved_at = {p(now)}, "
                f"resolved_by = {p(SYSTEM)}, updated_at = {p(now)} WHERE kind = {p(STUCK)} AND key = {p(key)} "
                f"AND state <> 'resolved' AND EXISTS (SELECT 1 FROM c_moved) RETURNING id, location, sku)"
            )
            # the partial unique index allows one unresolved record per (kind, key): one event at most;
            # its payload is `resolved_payload`'s
            parts.append(
                "c_resolved AS (INSERT INTO outbox_events (event_id, kind, subject, payload, created_at) "
                f"SELECT {p(new_decision_id())}, 'exception.resolved', 'exception:' || id, "
                f"json_build_object('exception', json_build_object('id', id, 'kind', {p(STUCK)}::text, "
                f"'key', {p(key)}::text, 'state', 'resolved', 'resolved_by', {p(SYSTEM)}::text, "
                f"'location', location, 'sku', sku, 'resolved_at', {p(now.isoformat())}::text)), "
                f"{p(now)}::timestamptz FROM c_cleared)"
            )
        if t.roles is not None:
            if t.roles:
                raise ValueError("a transition writing inbox index rows goes through the session")
            # by their keys, read from the case (`role_rows`): one seek of the table's key per role
            roles = [row["role"] for row in role_rows(t.case)]
            parts.append(
                f"c_roles AS (DELETE FROM approval_case_roles WHERE role = ANY({p(roles)}::varchar[]) "
                f"AND status = 'pending' AND created_at = {p(t.case['created_at'])}::timestamptz "
                f"AND case_id = {p(t.case['id'])} AND EXISTS (SELECT 1 FROM c_moved))"
            )
        text = ", ".join(parts)
        for name in _NAMES:
            text = text.replace(f"c_{name}", f"c_{name}_{n}")
        return text


def _shape(t: Transition) -> tuple[Any, ...]:
    """What of `t` decides the text of its part of a statement (`CaseStore._parts`), as a sortable key."""
    shape = (tuple(t.values), len(t.steps), len(t.events), t.clear_stuck)
    return (*shape, t.roles is not None)


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
