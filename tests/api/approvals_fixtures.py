"""The decisions' retail network behind the real app, with API keys that name people and their roles, and a
clock the workflow reads that tests move by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select

from service.db.engine import create_engine, session_factory
from service.db.models import ApprovalStep, AuditEntry, OutboxEvent
from service.security.keys import create_key
from service.stock import Levels, SnapshotRow
from tests.api.decisions_fixtures import DecisionsApi, decisions_api

START = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


class ApprovalsApi:
    """`await wf.as_person("ana", "store_manager").post(...)`: a key named for a person."""

    def __init__(self, dapi: DecisionsApi) -> None:
        self.dapi = dapi
        self.client = dapi.client
        self.clock = Clock()
        self.workflow.clock = self.clock
        self._keys: dict[str, str] = {}

    @property
    def workflow(self) -> Any:
        return self.client.services.workflow

    async def sweep(self, now: datetime, workflow: Any = None) -> dict[str, int]:
        """One sweeper round at `now` (by `workflow`, else the app's), run on the app's event loop (where
        its connections live)."""
        portal = self.client.http.blocking_portal
        sweep = (workflow or self.workflow).sweep
        counts: dict[str, int] = await asyncio.to_thread(portal.call, sweep, now)
        return counts

    def restarted(self) -> Any:
        """The workflow of a worker started afresh on the same services (it knows nothing of what the
        app's workflow did)."""
        return type(self.workflow)(self.workflow.services, clock=self.clock)

    async def person(self, name: str, *roles: str) -> dict[str, str]:
        key = self._keys.get(name)
        if key is None:
            engine = create_engine(self.client.settings.database)
            try:
                key = await create_key(session_factory(engine), name, list(roles))
            finally:
                await engine.dispose()
            self._keys[name] = key
        return {"Authorization": f"Bearer {key}"}

    async def file(self, kind: str, body: dict[str, Any], who: str = "sam") -> Any:
        headers = await self.person(who, "requester")
        return await self.client.http.post(f"/v1/{kind}s", json=body, headers=headers)

    async def act(
        self, case_id: str, verdict: str, name: str, *roles: str, comment: str | None = None
    ) -> Any:
        headers = await self.person(name, *roles)
        body = {} if comment is None else {"comment": comment}
        return await self.client.http.post(f"/v1/approvals/{case_id}/{verdict}", json=body, headers=headers)

    async def get(self, path: str, name: str = "planner-pat", *roles: str, **params: Any) -> Any:
        headers = await self.person(name, *(roles or ("planner",)))
        return await self.client.http.get(path, params=params, headers=headers)

    async def levels(self, sku: str) -> dict[str, Levels]:
        return (await self.dapi.levels([sku])).get(sku, {})

    async def counts(self, case_id: str, subject: str) -> tuple[int, int, int]:
        """Steps of the case, audit rows and outbox events about its subject."""
        async with self.client.session() as session:
            steps = await session.scalar(
                select(func.count()).select_from(ApprovalStep).where(ApprovalStep.case_id == case_id)
            )
            audits = await session.scalar(
                select(func.count()).select_from(AuditEntry).where(AuditEntry.subject == subject)
            )
            events = await session.scalar(
                select(func.count()).select_from(OutboxEvent).where(OutboxEvent.subject == subject)
            )
        return int(steps or 0), int(audits or 0), int(events or 0)

    async def events(self, subject: str) -> list[str]:
        async with self.client.session() as session:
            rows = await session.execute(
                select(OutboxEvent.kind).where(OutboxEvent.subject == subject).order_by(OutboxEvent.id)
            )
            return [kind for (kind,) in rows]


@asynccontextmanager
async def approvals_api(database_url: str) -> AsyncIterator[ApprovalsApi]:
    async with decisions_api(database_url) as dapi:
        await dapi.snapshot([SnapshotRow("TV-003", "dc-manchester", 10)])
        yield ApprovalsApi(dapi)


def transfer(**overrides: Any) -> dict[str, Any]:
    """Two TVs (1,200 at cost) between two northern sites: routed to a store manager (the default rule),
    24 h SLA, escalating to the district then the regional manager."""
    body: dict[str, Any] = {
        "transfer_id": "t-1",
        "sku": "TV-003",
        "qty": 2,
        "from_location": "dc-manchester",
        "to_location": "store-leeds",
        "requested_by": {"id": "sam", "role": "store_associate"},
        "reason": "restock",
    }
    body.update(overrides)
    return body


def markdown(**overrides: Any) -> dict[str, Any]:
    """A 40 % markdown of TEE-001: routed to a category manager (default rule)."""
    body: dict[str, Any] = {
        "markdown_id": "m-1",
        "sku": "TEE-001",
        "current_price": 20.0,
        "proposed_price": 12.0,
        "requested_by": {"id": "sam", "role": "store_manager"},
        "effective_from": "2026-12-01",
    }
    body.update(overrides)
    return body
