"""`create_app()`: the Litestar application with every area's routes, dependencies and lifecycle."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components, SecurityScheme
from litestar.plugins.prometheus import PrometheusConfig, PrometheusController

from service.api import approvals, decisions, health, master_data, rulesets, simulations, stock
from service.api.deps import dependencies
from service.api.openapi import document_request_bodies
from service.api.problems import exception_handlers
from service.db.engine import create_engine, session_factory
from service.db.migrate import upgrade
from service.decisions.log import open_decision_log
from service.masterdata import MasterDataCache
from service.rules.registry import start_rules
from service.security import AuthMiddleware
from service.services import Services
from service.settings import Settings, get_settings
from service.stock import open_store, start_sweeper
from service.workflow.cases import Workflow
from service.workflow.sweeper import start_workflow_sweeper

log = logging.getLogger("retail_policy")


class MetricsController(PrometheusController):
    path = "/metrics"
    openmetrics_format = False


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


async def start_services(settings: Settings) -> Services:
    engine = create_engine(settings.database)
    if _auto_migrate():
        await upgrade(engine)
    sessions = session_factory(engine)
    services = Services(
        settings=settings, engine=engine, sessions=sessions, master_data=MasterDataCache(sessions)
    )
    services.stock = await open_store(settings)
    services.tasks.append(start_sweeper(services.stock, settings.stock.sweep_interval_seconds))
    await start_rules(services)
    services.decision_log = await open_decision_log(sessions)
    services.workflow = Workflow(services)
    services.tasks.append(start_workflow_sweeper(services.workflow))
    return services


async def stop_services(services: Services) -> None:
    for task in services.tasks:
        task.cancel()
    for closer in (services.simulations, services.decision_log, services.rules, services.stock):
        close = getattr(closer, "close", None)
        if close is not None:
            try:
                await close()
            except Exception:  # one component failing to close must not keep the others open
                log.exception("closing %s failed", type(closer).__name__)
    await services.engine.dispose()


def create_app(settings: Settings | None = None) -> Litestar:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        services = await start_services(settings)
        app.state.services = services
        previous = _tune_collector()
        try:
            yield
        finally:
            _restore_collector(previous)
            await stop_services(services)

    prometheus = PrometheusConfig(
        app_name="retail_policy", prefix="retail_policy", group_path=True, exclude=["/metrics", "/health"]
    )
    route_handlers: list[Any] = [
        health.router,
        master_data.router,
        stock.router,
        rulesets.router,
        decisions.router,
        simulations.router,
        approvals.router,
        MetricsController,
    ]
    return Litestar(
        route_handlers=route_handlers,
        lifespan=[lifespan],
        on_startup=[document_request_bodies],
        dependencies=dependencies(),
        exception_handlers=exception_handlers(),
        middleware=[prometheus.middleware, AuthMiddleware],
        request_max_body_size=settings.server.max_body_bytes,
        openapi_config=OpenAPIConfig(
            title="Retail policy service",
            version="0.1.0",
            path="/schema",
            components=Components(
                security_schemes={
                    "apiKey": SecurityScheme(type="http", scheme="bearer", description="API key")
                }
            ),
            security=[{"apiKey": []}],
        ),
        debug=False,
    )
