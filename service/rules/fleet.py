"""The fleet view: which ruleset generation and versions every service worker serves.

Each worker's registry writes a heartbeat row (its own, keyed by host, pid and a per-start token) when it
starts, whenever its snapshot changes, and at least every `RULES_HEARTBEAT_SECONDS`. `GET
/v1/rulesets/fleet` and the console read them back. A row not refreshed within three heartbeat periods
belongs to a worker that stopped or cannot reach the database; rows older than a day are deleted.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from service.db.base import aware, utc_now
from service.db.models.rulesets import RulesetHeartbeatRow

KEEP_ROWS = timedelta(days=1)
ALIVE_PERIODS = 3  # a worker is counted alive while its row is younger than this many heartbeat periods


@dataclass(frozen=True)
class WorkerIdentity:
    """Who writes a heartbeat: the host name, the process id and a token that differs on every start."""

    host: str
    pid: int
    started_at: datetime
    token: str

    @property
    def worker(self) -> str:
        return f"{self.host}:{self.pid}:{self.token}"

    @classmethod
    def of_this_process(cls) -> WorkerIdentity:
        return cls(socket.gethostname()[:200], os.getpid(), utc_now(), uuid.uuid4().hex[:8])


@dataclass(frozen=True)
class Heartbeat:
    """What a worker serves at one moment."""

    generation: int
    engine: str
    served: Sequence[dict[str, Any]]
    reload_error: str | None


async def record_heartbeat(session: AsyncSession, identity: WorkerIdentity, beat: Heartbeat) -> None:
    """Write this worker's row (its own: no other writer touches it) and drop rows of long-gone workers."""
    now = utc_now()
    row = await session.get(RulesetHeartbeatRow, identity.worker)
    if row is None:
        await session.execute(
            delete(RulesetHeartbeatRow).where(RulesetHeartbeatRow.seen_at < now - KEEP_ROWS)
        )
        row = RulesetHeartbeatRow(
            worker=identity.worker, host=identity.host, pid=identity.pid, started_at=identity.started_at
        )
        session.add(row)
    row.engine = beat.engine
    row.generation = beat.generation
    row.served = list(beat.served)
    row.reload_error = beat.reload_error
    row.seen_at = now
    await session.commit()


async def remove_heartbeat(session: AsyncSession, identity: WorkerIdentity) -> None:
    """A worker that stops cleanly leaves the fleet at once."""
    await session.execute(delete(RulesetHeartbeatRow).where(RulesetHeartbeatRow.worker == identity.worker))
    await session.commit()


async def fleet(session: AsyncSession, generation: int, heartbeat_seconds: float) -> dict[str, Any]:
    """Every worker seen within the last day, newest first; `alive` and `current` say which count."""
    now = utc_now()
    alive_after = now - timedelta(seconds=ALIVE_PERIODS * heartbeat_seconds)
    rows = (
        await session.scalars(
            select(RulesetHeartbeatRow).order_by(RulesetHeartbeatRow.host, RulesetHeartbeatRow.pid)
        )
    ).all()
    workers = []
    for row in rows:
        seen = aware(row.seen_at)
        alive = seen >= alive_after
        workers.append(
            {
                "worker": row.worker,
                "host": row.host,
                "pid": row.pid,
                "engine": row.engine,
                "generation": row.generation,
                "current": row.generation == generation,
                "alive": alive,
                "served": row.served,
                "reload_error": row.reload_error,
                "started_at": aware(row.started_at).isoformat(),
                "seen_at": seen.isoformat(),
            }
        )
    alive_workers = [w for w in workers if w["alive"]]
    return {
        "generation": generation,
        "workers": workers,
        "alive": len(alive_workers),
        "behind": sum(1 for w in alive_workers if not w["current"]),
        "heartbeat_seconds": heartbeat_seconds,
    }
