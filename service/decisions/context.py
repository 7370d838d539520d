"""What a decision use case needs from the outside world, passed in explicitly.

The API builds one per request from the app's services; the simulator builds its own with an isolated
stock store and a log that keeps nothing, so a simulated decision runs exactly the production code.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Literal, Protocol
from zoneinfo import ZoneInfo

from service.decisions.log import DecisionSink
from service.decisions.rules import RulesSource, RulesView, rules_view
from service.errors import Unavailable
from service.masterdata import MasterData
from service.settings import Settings
from service.stock import StockStore

TraceLevel = Literal["none", "rules", "full"]


class DemandSource(Protocol):
    """Exponentially weighted daily demand rates, by (sku, location), for those it knows."""

    async def rates(self, pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], float]: ...


def _always_confirmed(kind: str, held: object | None = None) -> None:
    return None


class DecisionServices(Protocol):
    """What a decision made by the service reads of the app's services (`service.services.Services`)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def stock(self) -> StockStore: ...

    @property
    def rules(self) -> RulesSource: ...

    @property
    def decision_log(self) -> DecisionSink: ...


@dataclass
class DecisionContext:
    stock: StockStore
    master_data: MasterData
    rules: RulesView
    log: DecisionSink
    now: datetime
    actor: str | None = None
    demand: DemandSource | None = None
    # the calendar whose days locations' daily capacities count in
    capacity_zone: tzinfo = UTC
    started: float = field(default_factory=time.perf_counter)
    # raises when this worker must not decide `kind` now (its rulesets are unconfirmed past the deadline)
    rules_confirm: Callable[[str, object | None], None] = _always_confirmed

    @property
    def capacity_day(self) -> str:
        """Today in the capacity calendar, as YYYY-MM-DD."""
        return self.now.astimezone(self.capacity_zone).date().isoformat()

    def active(self, kind: str) -> Any:
        self.rules_confirm(kind, self.rules)  # confirmed for the snapshot this request holds
        ruleset = self.rules.active(kind)
        if ruleset is None:
            raise Unavailable(f"no active {kind} ruleset is loaded", retry_after=5)
        return ruleset

    def elapsed_ms(self) -> float:
        # milliseconds to three places: whole microseconds, rounded, cost half of `round(ms, 3)`
        return round((time.perf_counter() - self.started) * 1e6) / 1000


def context_from(
    services: DecisionServices, actor: str | None, now: datetime, master_data: MasterData
) -> DecisionContext:
    """The context of a decision made by the service for `actor` at `now` (`services` as started by the app)."""
    return DecisionContext(
        stock=services.stock,
        master_data=master_data,
        rules=rules_view(services.rules),
        rules_confirm=services.rules.confirm,
        log=services.decision_log,
        now=now,
        actor=actor,
        demand=services.stock.demand,
        capacity_zone=ZoneInfo(services.settings.stock.capacity_timezone),
    )


def evaluate(
    ctx: DecisionContext, kind: str, facts: Mapping[str, Any], trace: TraceLevel
) -> tuple[Any, dict[str, Any] | None]:
    """Evaluate the active ruleset of `kind` (and its shadow, whose differences are only recorded)."""
    ruleset = ctx.active(kind)
    evaluated = ruleset.evaluate(facts, trace)
    shadow = ruleset.shadow_evaluate(facts, evaluated)
    return evaluated, None if shadow is None else shadow.to_dict()


def rules_trace(evaluated: Any, trace: TraceLevel) -> dict[str, Any] | None:
    if trace == "none":
        return None
    rules: dict[str, Any] = evaluated.evaluation.trace or {}
    return {"rules": rules}
