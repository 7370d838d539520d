"""Documented shapes of answers that handlers build as dicts (for the OpenAPI document only).

The handlers keep returning dicts; `tests/api/test_openapi.py` checks real answers against these.
Structs here allow keys beyond the listed ones (a decision kind may add its own).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec


class DecisionOut(msgspec.Struct):
    """A decision: its id, kind, what was decided, the ruleset version that decided it, trace, timings."""

    decision_id: str
    kind: str
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    decision: dict[str, Any]
    ruleset: dict[str, Any]
    trace: dict[str, Any] | None
    timings: dict[str, float]
    shadow: dict[str, Any] | None = None


class LoggedDecisionOut(DecisionOut, kw_only=True):
    """A decision as logged: the answer plus the request it answered and who asked."""

    request: dict[str, Any]
    actor: str | None = None


class SimulationLinks(msgspec.Struct):
    self: str
    report: str


class SimulationAccepted(msgspec.Struct):
    """A simulation was queued; follow `links.self`."""

    id: str
    status: str
    links: SimulationLinks


class SimulationOut(msgspec.Struct):
    """A simulation: its state, what was asked, and once done the KPIs of every run (the report is HTML at
    `/v1/simulations/{id}/report`)."""

    id: str
    status: str  # queued | running | done | failed
    progress: Annotated[float, msgspec.Meta(ge=0, le=1)]
    requested_by: str
    request: dict[str, Any]
    created_at: Annotated[datetime, msgspec.Meta(tz=True)]
    finished_at: Annotated[datetime, msgspec.Meta(tz=True)] | None
    error: str | None
    kpis: dict[str, Any] | None
