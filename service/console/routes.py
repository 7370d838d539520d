"""The console router (`/console`): its pages, its static files, its checks and its error pages."""

from __future__ import annotations

from typing import Any

from litestar import Response, Router
from litestar.static_files import create_static_files_router

from service.console import approvals, operations, rulesets, signin
from service.console.web import (
    HERE,
    ConsoleRefusal,
    check_request,
    console_templates,
    on_refusal,
    on_service_error,
    secure,
)
from service.errors import ServiceError


def _after(response: Response[Any]) -> Response[Any]:
    return secure(response)


pages = Router(
    path="/console",
    route_handlers=[
        signin.sign_in_page,
        signin.sign_in,
        signin.sign_out,
        signin.home,
        rulesets.rulesets_page,
        rulesets.ruleset_page,
        rulesets.version_page,
        rulesets.editor_page,
        rulesets.create_draft,
        rulesets.publish,
        rulesets.shadow,
        rulesets.unshadow,
        rulesets.rollback,
        rulesets.try_page,
        rulesets.shadow_page,
        operations.decisions_page,
        operations.decision_page,
        operations.stock_page,
        operations.exceptions_page,
        operations.act_on_exception,
        operations.simulations_page,
        operations.start_simulation,
        operations.simulation_page,
        operations.simulation_report,
        operations.simulation_kpis,
        approvals.inbox_page,
        approvals.case_page,
        approvals.approve,
        approvals.reject,
    ],
    before_request=check_request,
    after_request=_after,
    exception_handlers={ConsoleRefusal: on_refusal, ServiceError: on_service_error},
    include_in_schema=False,
)

static = create_static_files_router(
    path="/console/static", directories=[HERE / "static"], name="console-static", include_in_schema=False
)

console_router: list[Router] = [pages, static]

__all__ = ["console_router", "console_templates"]
