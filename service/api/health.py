"""Liveness and readiness probes (no authentication: load balancers call them)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable

from litestar import Response, Router, get
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from sqlalchemy import text

from service.api.answers import Answer
from service.services import Services
from service.stock import StockStateLost

log = logging.getLogger("retail_policy.health")
PROBE_SECONDS = 2.0


class Live(Answer):
    status: str  # always `ok`: the process answers


class RulesState(Answer):
    """The rulesets this process serves: their generation and whether this worker confirmed them within
    the switch deadline (`unconfirmed_kinds`: those it would refuse to decide on)."""

    loaded: bool
    generation: int
    confirmed_seconds_ago: float | None
    switch_deadline_seconds: float
    unconfirmed_kinds: list[str]
    last_reload_error: str | None


class Readiness(Answer):
    """`ok`, or `degraded` with `checks` naming the backing service that does not answer."""

    status: str
    checks: dict[str, str]
    stock_backend: str
    rules_engine: str
    rules: RulesState


@get("/live", operation_id="healthLive")
async def live() -> Live:
    return Live("ok")


async def _check(name: str, probe: Awaitable[None]) -> tuple[str, str]:
    """`ok`, `down: <reason>` or `rebuilding: <reason>`: generic reasons only, since the probe needs no key;
    the failure itself (hosts, ports, driver messages) goes to the server log."""
    try:
        await asyncio.wait_for(probe, timeout=PROBE_SECONDS)
    except StockStateLost:
        return name, "rebuilding: stock state lost, rebuilding from the journal"
    except TimeoutError:
        log.warning("readiness: %s did not answer within %g s", name, PROBE_SECONDS)
        return name, f"down: no answer within {PROBE_SECONDS:g} s"
    except Exception as exc:  # a readiness probe reports any failure rather than raising it
        log.warning("readiness: %s is down: %s: %s", name, type(exc).__name__, exc)
        return name, "down: not answering"
    return name, "ok"


async def _database(services: Services) -> None:
    async with services.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _rules_state(services: Services) -> RulesState:
    """The rulesets this process serves. A failed reload does not make the process unready (it keeps
    serving the last snapshot it loaded), so it is reported here for operators instead of failing the probe."""
    registry = services.rules
    return RulesState(
        loaded=True,
        generation=registry.snapshot().generation,
        **registry.confirmation(),
        # the error itself is in the server log
        last_reload_error=None
        if registry.last_error is None
        else "the last reload failed (see the server log)",
    )


@get(
    "/ready",
    operation_id="healthReady",
    responses={
        503: ResponseSpec(
            Readiness, description="A backing service does not answer (`checks` says which); Retry-After"
        )
    },
)
async def ready(services: NamedDependency[Services]) -> Response[Readiness]:
    probes = [_check("database", _database(services))]
    probes.append(_check("stock", services.stock.ping()))
    checks = dict(await asyncio.gather(*probes))
    healthy = all(state == "ok" for state in checks.values())
    body = Readiness(
        status="ok" if healthy else "degraded",
        checks=checks,
        stock_backend=services.settings.stock.backend,
        rules_engine=services.settings.rules.engine,
        rules=_rules_state(services),
    )
    return Response(
        body, status_code=200 if healthy else 503, headers=None if healthy else {"Retry-After": "2"}
    )


router = Router(path="/health", route_handlers=[live, ready], tags=["operations"])
