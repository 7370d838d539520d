"""The insights as Prometheus gauges on /metrics, read from the database when /metrics is scraped."""

from __future__ import annotations

from datetime import datetime, timedelta

from prometheus_client import Gauge
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.db.models import Delivery
from service.workflow.insights import approval_insights, exception_insights

WINDOW = timedelta(days=30)  # closed cases the cycle times and breach rates look back over

CYCLE = Gauge(
    "retail_policy_approval_cycle_seconds",
    "Approval cycle time (closed_at - created_at) of cases closed in the last 30 days, by quantile",
    ["kind", "role", "quantile"],
)
BREACH = Gauge(
    "retail_policy_approval_sla_breach_ratio",
    "Share of the cases with an SLA created in the last 30 days that breached it",
    ["kind"],
)
OPEN_CASES = Gauge("retail_policy_approvals_open", "Pending approval cases by age band", ["kind", "age_band"])
OPEN_EXCEPTIONS = Gauge(
    "retail_policy_exceptions_open", "Unresolved exceptions by age band", ["kind", "age_band"]
)
DELIVERIES = Gauge("retail_policy_webhook_deliveries", "Webhook deliveries by status", ["status"])


async def refresh(sessions: async_sessionmaker[AsyncSession], now: datetime) -> None:
    async with sessions() as session:
        approvals = await approval_insights(session, now - WINDOW, now)
        exceptions = await exception_insights(session, now)
        statuses = (
            await session.execute(select(Delivery.status, func.count()).group_by(Delivery.status))
        ).all()
    for gauge in (CYCLE, BREACH, OPEN_CASES, OPEN_EXCEPTIONS, DELIVERIES):
        gauge.clear()
    for cycle in approvals.cycle_time:
        CYCLE.labels(cycle.kind, cycle.role, "0.5").set(cycle.p50_seconds)
        CYCLE.labels(cycle.kind, cycle.role, "0.9").set(cycle.p90_seconds)
    for sla in approvals.sla:
        BREACH.labels(sla.kind).set(sla.breach_rate)
    for row in approvals.open_by_age:
        OPEN_CASES.labels(row.kind, row.age_band).set(row.count)
    for row in exceptions.open_by_age:
        OPEN_EXCEPTIONS.labels(row.kind, row.age_band).set(row.count)
    for status, count in statuses:
        DELIVERIES.labels(status).set(count)
