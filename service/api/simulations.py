"""Simulation endpoints: start a replay of a promotion scenario, follow it, read its KPIs and its report.

Thin controllers over `simulators.jobs.SimulationJobs`, which each worker keeps on `services.simulations`. A simulation runs on the worker that accepted it;
its record (status, KPIs, report) is in the database, readable from any worker.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, Router, get, post
from litestar.di import NamedDependency
from litestar.params import Parameter

from service.api.body import decode_body
from service.api.openapi import answers, json_body, json_response, links
from service.api.responses import SimulationAccepted, SimulationOut
from service.db.base import aware
from service.errors import Conflict, FieldError, NotFound
from service.security import principal_of, requires
from service.services import Services
from simulators.jobs import SimulationJobs, SimulationRequest

SimulationId = Annotated[str, Parameter(description="simulation id", max_length=36)]


def _jobs(services: Services) -> SimulationJobs:
    return services.simulations


async def _record(services: Services, simulation_id: str) -> Any:
    row = await _jobs(services).get(simulation_id)
    if row is None:
        raise NotFound(
            f"no simulation {simulation_id!r}", [FieldError("id", f"no simulation {simulation_id!r}")]
        )
    return row


@post("/", opt=requires("planner"), operation_id="startSimulation", status_code=202)
@json_body(SimulationRequest)
@json_response(SimulationAccepted)
@links(
    getSimulation={"simulation_id": "$response.body#/id"},
    getSimulationReport={"simulation_id": "$response.body#/id"},
)
async def start_simulation(
    services: NamedDependency[Services], request: Request[Any, Any, Any]
) -> Response[dict[str, Any]]:
    body = await decode_body(request, SimulationRequest)
    simulation_id = await _jobs(services).submit(body, principal_of(request).name)
    location = f"/v1/simulations/{simulation_id}"
    return Response(
        {
            "id": simulation_id,
            "status": "queued",
            "links": {"self": location, "report": f"{location}/report"},
        },
        status_code=202,
        headers={"Location": location},
    )


@get("/{simulation_id:str}", opt=requires("planner"), operation_id="getSimulation")
@json_response(SimulationOut)
async def get_simulation(services: NamedDependency[Services], simulation_id: SimulationId) -> dict[str, Any]:
    row = await _record(services, simulation_id)
    progress = _jobs(services).progress(simulation_id)
    return {
        "id": row.id,
        "status": row.status,
        "progress": 1.0 if row.status == "done" else (progress if progress is not None else row.progress),
        "requested_by": row.requested_by,
        "request": row.request,
        "created_at": aware(row.created_at).isoformat(),
        "finished_at": aware(row.finished_at).isoformat() if row.finished_at else None,
        "error": row.error,
        "kpis": msgspec.json.decode(row.kpis) if row.kpis else None,
    }


@get(
    "/{simulation_id:str}/report",
    opt=requires("planner"),
    operation_id="getSimulationReport",
    media_type="text/html; charset=utf-8",
)
@answers(409)
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
