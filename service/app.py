"""`create_app()`: the Litestar application with every area's routes, dependencies and lifecycle."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Litestar, MediaType, Request, Response, get
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusController

from service.api import (
    approvals,
    decisions,
    exceptions,
    health,
    insights,
    keys,
    master_data,
    rulesets,
    simulations,
    stock,
    webhooks,
)
from service.api.body import StrictRequest, require_body
from service.api.deps import dependencies
from service.api.middleware import ApiMiddleware
from service.api.openapi import StructSchemas, document_operations
from service.api.problems import exception_handlers
from service.api.request_metrics import RequestMetrics
from service.console.routes import console_router, console_templates
from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.db.partitions import PartitionKeeper
from service.db.sqlite_writer import SqliteWriters
from service.decisions.log import open_decision_log
from service.masterdata import MasterDataCache
from service.rules.registry import open_registry
from service.rules.trial import TrialWorker
from service.services import Services
from service.settings import Settings, get_settings
from service.stock import open_store, start_sweeper
from service.workflow.cases import Workflow
from service.workflow.dispatcher import DeliveryPolicy, Dispatcher
from service.workflow.metrics import refresh as refresh_workflow_metrics
from service.workflow.monitor import ExceptionMonitor
from service.workflow.sweeper import start_workflow_sweeper
from simulators.jobs import SimulationJobs

log = logging.getLogger("retail_policy")

STOP_TIMEOUT_SECONDS = 5.0


class MetricsController(PrometheusController):
    path = "/metrics"
    openmetrics_format = False

    @get(
        media_type=MediaType.TEXT,  # the answer sets its exact Content-Type (the exposition format version)
        operation_id="getMetrics",
        summary="Prometheus metrics (text exposition format)",
        tags=["operations"],
    )
    async def get(self, request: Request[Any, Any, Any]) -> Response[bytes]:
        # the workflow gauges are read from the database, so every worker answers the same
        services = request.app.state.services
        request.app.state.request_metrics.flush()  # this worker's latest requests, written now
        try:
            await refresh_workflow_metrics(services.sessions, datetime.now(UTC))
        except Exception:  # the request metrics are still worth serving
            log.exception("reading the workflow metrics failed")
        answer: Response[bytes] = await PrometheusController.get.fn(self)
        return answer


def _auto_migrate() -> bool:
    # `retail-policy serve` migrates once in the parent and turns this off for its workers.
    return os.environ.get("AUTO_MIGRATE", "1") not in ("0", "false", "no")


# A request makes thousands of short-lived containers. With the default young-generation threshold (700)
# the collector runs several times per request and, every tenth time, walks the older generation too.
YOUNG_GENERATION_THRESHOLD = 10_000


def _tune_collector() -> tuple[int, int, int]:
    """Move what start-up made (routes, compiled rulesets, connections) out of the collector's reach and
    collect the young generation in larger, rarer sweeps; returns the thresholds to restore."""
    previous = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, 20, 20)
    return previous


def _restore_collector(previous: tuple[int, int, int]) -> None:
    # the frozen objects become collectable again, so a process that starts apps repeatedly frees them
    gc.unfreeze()
    gc.set_threshold(*previous)


async def start_services(settings: Settings, trials: TrialWorker | None = None) -> Services:
    """The worker's services; the ruleset checks run in `trials` when given (its owner closes it), else in
    a trial child of the services' own."""
    engine = create_engine(settings.database)
    if _auto_migrate():
        await upgrade(engine)
    partitions = PartitionKeeper(
        engine,
        ahead_days=settings.database.partitions_ahead_days,
        retention_days=settings.database.decision_log_retention_days,
        interval_seconds=settings.database.partition_check_seconds,
        journal_retention_days=settings.database.journal_retention_days,
    )
    await partitions.run_once()  # on PostgreSQL: today's and the coming days' partitions exist
    sessions = session_factory(engine)
    master_data = MasterDataCache(sessions)
    # the decision log and a Redis store's journal write one SQLite file through one writer
    sqlite_writers = SqliteWriters()
    stock = await open_store(settings, sqlite_writers=sqlite_writers)
    sweeper = start_sweeper(stock, settings.stock.sweep_interval_seconds)
    own_trials = trials is None
    trials = TrialWorker() if trials is None else trials
    try:
        rules = await open_registry(settings, sessions, trials)
    except BaseException:
        if own_trials:
            trials.close()
        raise
    services = Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        master_data=master_data,
        stock=stock,
        rules=rules,
        trials=trials,
        decision_log=await open_decision_log(sessions, sqlite_writers=sqlite_writers),
        simulations=SimulationJobs(sessions, settings.rules.rulesets_dir),
        monitor=ExceptionMonitor(
            sessions,
            stock,
            master_data,
            rules,
            oversell_channels=settings.workflow.oversell_channels,
            clock=lambda: datetime.now(UTC),
        ),
        sqlite_writers=sqlite_writers,
        tasks=[sweeper],
    )
    if engine.dialect.name == "postgresql" or settings.database.journal_retention_days > 0:
        services.tasks.append(partitions.start())
    services.workflow = Workflow(services)
    services.tasks.append(start_workflow_sweeper(services.workflow))
    start_workflow(services)
    return services


def start_workflow(services: Services) -> None:
    """The periodic exception checks (also hooked into the stock endpoint) and the webhook dispatcher."""
    workflow = services.settings.workflow
    if not workflow.background:
        return
    services.dispatcher = Dispatcher(
        services.sessions,
        DeliveryPolicy(
            max_attempts=workflow.webhook_max_attempts,
            base_delay_seconds=workflow.webhook_base_delay_seconds,
            max_delay_seconds=workflow.webhook_max_delay_seconds,
            timeout_seconds=workflow.webhook_timeout_seconds,
            retention=timedelta(days=workflow.webhook_retention_days)
            if workflow.webhook_retention_days
            else None,
        ),
        sqlite_writers=services.sqlite_writers,
    )
    services.tasks.append(asyncio.ensure_future(services.dispatcher.run(workflow.webhook_poll_seconds)))
    services.tasks.append(asyncio.ensure_future(services.monitor.run(workflow.exception_check_seconds)))


async def stop_services(services: Services, *, close_trials: bool = True) -> None:
    for task in services.tasks:
        task.cancel()
    if services.tasks:
        # let each background task unwind (close its sessions) while the pools it uses are still open
        await asyncio.wait(services.tasks, timeout=STOP_TIMEOUT_SECONDS)
    closers: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("simulations", services.simulations.close),
        ("decision log", services.decision_log.close),
        ("rules registry", services.rules.close),
        ("stock store", services.stock.close),
    ]
    if services.dispatcher is not None:
        closers.append(("webhook dispatcher", services.dispatcher.close))
    for name, close in closers:
        try:
            await close()
        except Exception:  # one component failing to close must not keep the others open
            log.exception("closing the %s failed", name)
    workflow: Workflow | None = getattr(services, "workflow", None)
    if workflow is not None:
        workflow.close()
    if close_trials:
        services.trials.close()
    await services.engine.dispose()


def create_app(settings: Settings | None = None, *, trials: TrialWorker | None = None) -> Litestar:
    """The app; it starts its own trial child for ruleset checks and ends it at shutdown, unless given
    `trials`, which stays its owner's (tests share one across the apps they start)."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await start_services(settings, trials)
        app.state.services = services
        previous = _tune_collector() if settings.server.tune_collector else None
        try:
            yield
        finally:
            request_metrics.flush()
            if previous is not None:
                _restore_collector(previous)
            await stop_services(services, close_trials=trials is None)

    request_metrics = RequestMetrics("retail_policy", "retail_policy", exclude=("/metrics", "/health"))
    route_handlers: list[Any] = [
        health.router,
        master_data.router,
        stock.router,
        rulesets.router,
        decisions.router,
        simulations.router,
        keys.router,
        webhooks.router,
        exceptions.router,
        insights.router,
        approvals.router,
        MetricsController,
        *console_router,
    ]
    return Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        on_startup=[document_operations],
        request_class=StrictRequest,
        before_request=require_body,
        plugins=[StructSchemas()],
        dependencies=dependencies(),
        exception_handlers=exception_handlers(),
        middleware=[DefineMiddleware(ApiMiddleware, metrics=request_metrics)],
        state=State({"request_metrics": request_metrics}),
        request_max_body_size=settings.server.max_body_bytes,
        template_config=console_templates(),
        openapi_config=OpenAPIConfig(
            title="Retail policy service",
            version="0.1.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(type="http", scheme="bearer", description="API key"),
                    "apiKeyHeader": SecurityScheme(
                        type="apiKey",
                        name="X-API-Key",
                        security_scheme_in="header",
                        description="the same API key, in its own header",
                    ),
                }
            ),
            security=[{"apiKey": []}, {"apiKeyHeader": []}],  # either one
        ),
        debug=False,
    )
