"""Decision, stock, exception and simulation pages.

Each reads through the API handler it mirrors (same function, same roles); changes call the same
workflow functions as the API handlers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal, get_args

import msgspec
from litestar import Request, Response, get, post
from litestar.params import FromPath, Parameter
from sqlalchemy import Select, select

from service.api import decisions as api_decisions
from service.api import exceptions as api_exceptions
from service.api import simulations as api_simulations
from service.api import stock as api_stock
from service.console.web import (
    Page,
    done,
    page_number,
    principal,
    problem_context,
    render,
    same_roles,
    secure,
)
from service.db.base import aware, equal_as_range
from service.db.models import SimulationRow
from service.db.models.stock import ReservationRecord, StockEventRecord
from service.decisions.explain import Recomputed, recompute_candidates
from service.decisions.search import DecisionFilter, find_decisions
from service.errors import Conflict, FieldError, Invalid, NotFound, ServiceError
from service.rules import repository as repo
from service.rules.language import FACT_CATALOG
from service.services import Services
from service.workflow.exceptions import (
    STATES,
    ExceptionStateError,
    UnknownException,
    acknowledge,
    resolve,
)
from simulators.jobs import SCENARIOS, RulesetChoice, SimulationRequest

PER_PAGE = 25
Id = Annotated[str, Parameter(max_length=64)]


def _services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


def _moment(raw: str | None, field: str) -> datetime | None:
    """A `datetime-local` value, read as UTC (the form says so)."""
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise Invalid(f"{field}: not a time", [FieldError(field, "expected YYYY-MM-DDTHH:MM")]) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


# --- decisions -------------------------------------------------------------------------------------------


@get("/decisions", opt=same_roles(api_decisions.get_decision))
async def decisions_page(request: Request[Any, Any, Any]) -> Response[Any]:
    query = request.query_params
    decision_id = (query.get("decision_id") or "").strip()
    if decision_id:
        return secure(
            Response(content=b"", status_code=303, headers={"Location": f"/console/decisions/{decision_id}"})
        )
    kinds = sorted(FACT_CATALOG)
    kind = query.get("kind") if query.get("kind") in kinds else None
    problem = None
    number = page_number(request)
    found: list[Any] = []
    more = False
    try:
        wanted = DecisionFilter(
            subject=(query.get("order_id") or "").strip() or None,
            kind=kind,
            since=_moment(query.get("since"), "since"),
            until=_moment(query.get("until"), "until"),
        )
        async with _services(request).sessions() as session:
            found, more = await find_decisions(session, wanted, (number - 1) * PER_PAGE, PER_PAGE)
    except ServiceError as error:
        problem = problem_context(error)
    return render(
        request,
        "decisions.html",
        title="Decisions",
        kinds=kinds,
        values={k: query.get(k, "") for k in ("order_id", "kind", "since", "until")},
        page=Page(found, number, more),
        problem=problem,
        status_code=problem["status"] if problem else 200,
    )


def _candidates(decision: dict[str, Any], groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Allocation candidates per SKU (`groups`, as the full trace has them), with the units each chosen
    location gives."""
    chosen: dict[tuple[str, str], int] = {}
    for line in (decision.get("decision") or {}).get("lines", []):
        for allocation in line.get("allocations", []):
            chosen[(line["sku"], allocation["location"])] = allocation["qty"]
    out = []
    for group in groups:
        rows = []
        for candidate in group.get("locations", []):
            qty = chosen.get((group.get("sku", ""), candidate.get("location", "")))
            rows.append({**candidate, "qty": qty})
        out.append({**group, "locations": rows})
    return out


@get("/decisions/{decision_id:str}", opt=same_roles(api_decisions.get_decision))
async def decision_page(request: Request[Any, Any, Any], decision_id: Id) -> Response[Any]:
    services = _services(request)
    decision = msgspec.to_builtins(await api_decisions.get_decision.fn(services, decision_id))
    trace = decision.get("trace") or {}
    recomputed: Recomputed | None = None
    groups = trace.get("candidates") or []
    if decision["kind"] == "allocation" and not groups:
        # traced at `rules` (or not at all): run the allocator again on what the decision recorded
        recomputed = recompute_candidates(decision, await services.master_data.get())
        groups = recomputed.candidates
    rules = trace.get("rules") if isinstance(trace.get("rules"), dict) else trace
    others = {k: v for k, v in trace.items() if k not in ("rules", "candidates", "facts", "evaluations")}
    return render(
        request,
        "decision.html",
        title=f"Decision {decision_id}",
        decision=decision,
        rules=rules if isinstance(rules, dict) and "rules" in rules else None,
        facts=trace.get("facts"),
        candidates=_candidates(decision, groups),
        recomputed=recomputed,
        evaluations=trace.get("evaluations") if isinstance(trace.get("evaluations"), list) else [],
        others=others,
    )


# --- stock -----------------------------------------------------------------------------------------------


def held_reservations() -> Select[ReservationRecord]:
    """The 500 newest held reservations (the page shows those with lines of its SKU)."""
    return (
        select(ReservationRecord)
        .where(ReservationRecord.status == "held")
        .order_by(ReservationRecord.created_at_ms.desc())
        .limit(500)
    )


def sku_events(sku: str) -> Select[StockEventRecord]:
    """A page of the SKU's newest stock events: a range of the index of (sku, applied_at_ms)
    (`equal_as_range`)."""
    events = StockEventRecord
    return (
        select(events)
        .where(*equal_as_range(events.sku, events.applied_at_ms, sku, -(2**63)))
        .order_by(events.sku.desc(), events.applied_at_ms.desc())
        .limit(PER_PAGE)
    )


@get("/stock", opt=same_roles(api_stock.get_stock))
async def stock_page(request: Request[Any, Any, Any]) -> Response[Any]:
    sku = (request.query_params.get("sku") or "").strip()[:64]
    services = _services(request)
    levels = None
    problem = None
    reservations: list[dict[str, Any]] = []
    events: list[Any] = []
    if sku:
        try:
            levels = msgspec.to_builtins(await api_stock.get_stock.fn(services, sku))
        except ServiceError as error:
            problem = problem_context(error)
        async with services.sessions() as session:
            # the SQL backend's own tables; other backends keep these in Redis and show levels only
            rows = (await session.execute(held_reservations())).scalars()
            for row in rows:
                lines = [line for line in row.lines if isinstance(line, dict) and line.get("sku") == sku]
                if lines:
                    reservations.append(
                        {
                            "id": row.id,
                            "order_id": row.order_id,
                            "channel": row.channel,
                            "lines": lines,
                            "expires_at": datetime.fromtimestamp(row.expires_at_ms / 1000, UTC),
                        }
                    )
            events = list((await session.execute(sku_events(sku))).scalars())
    return render(
        request,
        "stock.html",
        title=f"Stock {sku}" if sku else "Stock",
        sku=sku,
        levels=levels,
        problem=problem if sku else None,
        reservations=reservations[:PER_PAGE],
        events=[
            {
                "event_id": e.event_id,
                "type": e.type,
                "at": datetime.fromtimestamp(e.applied_at_ms / 1000, UTC),
            }
            for e in events
        ],
        backend=services.settings.stock.backend,
    )


# --- exceptions ------------------------------------------------------------------------------------------

EXCEPTION_KINDS = sorted(get_args(api_exceptions.Kind))


@get("/exceptions", opt=same_roles(api_exceptions.list_exceptions))
async def exceptions_page(request: Request[Any, Any, Any]) -> Response[Any]:
    query = request.query_params
    kind = query.get("kind") if query.get("kind") in EXCEPTION_KINDS else None
    wanted_state = query.get("state") if query.get("state") in STATES else None
    location = (query.get("location") or "").strip()[:64] or None
    older_than = (query.get("older_than") or "").strip()[:10] or None
    before = (query.get("before") or "").strip()[:36] or None
    listing = None
    problem = None
    try:
        listing = await api_exceptions.list_exceptions.fn(
            _services(request),
            kind=kind,
            wanted_state=wanted_state,
            location=location,
            older_than=older_than,
            before=before,
            limit=PER_PAGE,
        )
    except ServiceError as error:
        problem = problem_context(error)
    return render(
        request,
        "exceptions.html",
        title="Exceptions",
        kinds=EXCEPTION_KINDS,
        states=STATES,
        values={k: query.get(k, "") for k in ("kind", "state", "location", "older_than")},
        exceptions=msgspec.to_builtins(listing.exceptions) if listing else [],
        next=listing.next if listing else None,
        first=before is not None,
        problem=problem,
        status_code=problem["status"] if problem else 200,
    )


@post("/exceptions/{exception_id:str}/{action:str}", opt=same_roles(api_exceptions.acknowledge_exception))
async def act_on_exception(
    request: Request[Any, Any, Any], exception_id: Id, action: FromPath[str]
) -> Response[Any]:
    """Acknowledge or resolve, as `POST /v1/exceptions/{id}/acknowledge|resolve` does."""
    if action not in ("acknowledge", "resolve"):
        raise NotFound(f"no action {action!r}", [FieldError("action", "acknowledge or resolve")])
    form = await request.form()
    comment = form.get("comment")
    comment = comment.strip()[:2000] if isinstance(comment, str) and comment.strip() else None
    actor = principal(request).name
    now = datetime.now(UTC)
    try:
        async with _services(request).sessions() as session, session.begin():
            if action == "acknowledge":
                await acknowledge(session, exception_id, actor=actor, assignee=None, comment=comment, now=now)
            else:
                await resolve(session, exception_id, actor=actor, assignee=None, comment=comment, now=now)
    except UnknownException as error:
        raise NotFound(str(error), [FieldError("id", "unknown")]) from None
    except ExceptionStateError as error:
        raise Conflict(str(error), [FieldError("state", f"exception is {error.state}")]) from None
    return done("/console/exceptions", "acknowledged" if action == "acknowledge" else "resolved")


# --- simulations -----------------------------------------------------------------------------------------


@get("/simulations", opt=same_roles(api_simulations.get_simulation))
async def simulations_page(request: Request[Any, Any, Any]) -> Response[Any]:
    number = page_number(request)
    services = _services(request)
    async with services.sessions() as session:
        rows = list(
            (
                await session.execute(
                    select(SimulationRow)
                    .order_by(SimulationRow.created_at.desc(), SimulationRow.id.desc())
                    .offset((number - 1) * PER_PAGE)
                    .limit(PER_PAGE + 1)
                )
            ).scalars()
        )
    runs = [
        {
            "id": row.id,
            "status": row.status,
            "progress": row.progress,
            "requested_by": row.requested_by,
            "scenario": (row.request or {}).get("scenario") or "(inline)",
            "created_at": aware(row.created_at),
        }
        for row in rows[:PER_PAGE]
    ]
    scenarios = sorted(path.stem for path in SCENARIOS.glob("*.yaml"))
    async with services.sessions() as session:
        rulesets = [
            {"name": r.name, "versions": [v.version for v in await repo.list_versions(session, r.name)]}
            for r in await repo.list_rulesets(session)
        ]
    return render(
        request,
        "simulations.html",
        title="Simulations",
        page=Page(runs, number, len(rows) > PER_PAGE),
        scenarios=scenarios,
        rulesets=rulesets,
    )


def _simulation_request(form: Any) -> SimulationRequest:
    scenario = form.get("scenario")
    if not isinstance(scenario, str) or not scenario.strip():
        raise Invalid("choose a scenario", [FieldError("scenario", "required")])
    runs: list[list[RulesetChoice]] = [[]]  # the baseline: the active versions
    for key in ("compare_a", "compare_b"):
        value = form.get(key)
        if isinstance(value, str) and "@" in value:
            name, _, version = value.partition("@")
            if not version.isdigit():
                raise Invalid(f"{key}: bad version", [FieldError(key, "expected name@version")])
            runs.append([RulesetChoice(name=name, version=int(version))])
    seed = form.get("seed")
    engine: Literal["durable", "python"] = "durable" if form.get("engine") == "durable" else "python"
    return SimulationRequest(
        scenario=scenario.strip(),
        versions=runs,
        seed=int(seed) if isinstance(seed, str) and seed.strip().isdigit() else None,
        engine=engine,
    )


@post("/simulations", opt=same_roles(api_simulations.start_simulation))
async def start_simulation(request: Request[Any, Any, Any]) -> Response[Any]:
    services = _services(request)
    try:
        body = _simulation_request(await request.form())
        simulation_id = await services.simulations.submit(body, principal(request).name)
    except ServiceError as error:
        return render(request, "error.html", status_code=error.status, **problem_context(error))
    return done(f"/console/simulations/{simulation_id}", "started")


@get("/simulations/{simulation_id:str}", opt=same_roles(api_simulations.get_simulation))
async def simulation_page(request: Request[Any, Any, Any], simulation_id: Id) -> Response[Any]:
    run = await api_simulations.get_simulation.fn(_services(request), simulation_id)
    return render(request, "simulation.html", title=f"Simulation {simulation_id}", run=run)


@get("/simulations/{simulation_id:str}/report", opt=same_roles(api_simulations.get_report))
async def simulation_report(request: Request[Any, Any, Any], simulation_id: Id) -> Response[Any]:
    """The run's own HTML report, framed by the console page; it may style itself but runs no script."""
    report: Response[Any] = await api_simulations.get_report.fn(_services(request), simulation_id)
    report.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; frame-ancestors 'self'; sandbox"
    )
    report.headers["X-Content-Type-Options"] = "nosniff"
    return report


@get("/simulations/{simulation_id:str}/kpis.json", opt=same_roles(api_simulations.get_simulation))
async def simulation_kpis(request: Request[Any, Any, Any], simulation_id: Id) -> Response[Any]:
    run = await api_simulations.get_simulation.fn(_services(request), simulation_id)
    if run.kpis is None:
        raise Conflict(
            f"simulation {simulation_id} has no KPIs yet (status {run.status})",
            [FieldError("id", f"status is {run.status}")],
        )
    return secure(
        Response(
            msgspec.json.encode(run.kpis),
            media_type="application/json",
            headers={"Content-Disposition": f'attachment; filename="simulation-{simulation_id}-kpis.json"'},
        )
    )
