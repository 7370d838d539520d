"""Simulation endpoints: start a replay of a promotion scenario, follow it, read its KPIs and its report.

Thin controllers over `simulators.jobs.SimulationJobs`, which each worker keeps on `services.simulations`. A simulation runs on the worker that accepted it;
its record (status, KPIs, report) is in the database, readable from any worker.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, Parameter

from service.api.openapi import answers, links
from service.db.base import aware
from service.errors import Conflict, FieldError, NotFound
from service.security import principal_of, requires
from service.services import Services
from simulators.jobs import SimulationRequest


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


SimulationId = Annotated[str, Parameter(description="simulation id", max_length=36)]


async def _record(services: Services, simulation_id: str) -> Any:
    row = await services.simulations.get(simulation_id)
    if row is None:
        raise NotFound(
            f"no simulation {simulation_id!r}", [FieldError("id", f"no simulation {simulation_id!r}")]
        )
    return row


@post(
    "/",
    opt={
        **requires("planner"),
        **links(
            getSimulation={"simulation_id": "$response.body#/id"},
            getSimulationReport={"simulation_id": "$response.body#/id"},
        ),
    },
    operation_id="startSimulation",
    status_code=202,
)
async def start_simulation(
    services: NamedDependency[Services], request: Request[Any, Any, Any], data: JSONBody[SimulationRequest]
) -> Response[SimulationAccepted]:
    simulation_id = await services.simulations.submit(data, principal_of(request).name)
    location = f"/v1/simulations/{simulation_id}"
    accepted = SimulationAccepted(simulation_id, "queued", SimulationLinks(location, f"{location}/report"))
    return Response(accepted, status_code=202, headers={"Location": location})


@get("/{simulation_id:str}", opt=requires("planner"), operation_id="getSimulation")
async def get_simulation(services: NamedDependency[Services], simulation_id: SimulationId) -> SimulationOut:
    row = await _record(services, simulation_id)
    progress = services.simulations.progress(simulation_id)
    return SimulationOut(
        id=row.id,
        status=row.status,
        progress=1.0 if row.status == "done" else (progress if progress is not None else row.progress),
        requested_by=row.requested_by,
        request=row.request,
        created_at=aware(row.created_at),
        finished_at=aware(row.finished_at) if row.finished_at else None,
        error=row.error,
        kpis=msgspec.json.decode(row.kpis) if row.kpis else None,
    )


@get(
    "/{simulation_id:str}/report",
    opt={**requires("planner"), **answers(409)},
    operation_id="getSimulationReport",
    media_type="text/html; charset=utf-8",
)
async def get_report(services: NamedDependency[Services], simulation_id: SimulationId) -> Response[str]:
    row = await _record(services, simulation_id)
    if row.report is None:
        raise Conflict(
            f"simulation {simulation_id} has no report yet (status {row.status})",
            [FieldError("id", f"status is {row.status}")],
            title="Simulation not finished",
        )
    return Response(row.report, media_type="text/html; charset=utf-8")


router = Router(
    path="/v1/simulations",
    route_handlers=[start_simulation, get_simulation, get_report],
    tags=["simulations"],
)
