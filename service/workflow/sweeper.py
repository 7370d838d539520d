"""The workflow's background round: escalate or expire cases past their SLA and execute approved cases a
stopped worker left unexecuted. Every worker of every host runs it; each transition is guarded by the
case's version, so a case moves once however many sweepers reach it together."""

from __future__ import annotations

import asyncio
import logging

from service.workflow.cases import Workflow

log = logging.getLogger("retail_policy.workflow")
SWEEP_INTERVAL_SECONDS = 30.0


async def sweep_forever(workflow: Workflow, interval_seconds: float) -> None:
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            counts = await workflow.sweep()
        except Exception:  # the database is away: the next round tries again
            log.exception("approval sweep failed")
            continue
        if any(counts.values()):
            log.info("approval sweep: %s", counts)


def start_workflow_sweeper(
    workflow: Workflow, interval_seconds: float = SWEEP_INTERVAL_SECONDS
) -> asyncio.Task[None]:
    return asyncio.create_task(sweep_forever(workflow, interval_seconds), name="approval-sweeper")
