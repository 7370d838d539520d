"""Ruleset pages: the list, a ruleset's versions and audit, a version (YAML, validation, tests, diff),
the draft editor, the try-it form, the lifecycle buttons and the shadow differences.

Reads call the API handlers' own functions; changes call `service.rules.lifecycle` as the API does.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec
from litestar import Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, Parameter

from service.api import rulesets as api
from service.console.web import (
    Page,
    any_roles,
    done,
    may,
    page_number,
    paginate,
    principal,
    problem_context,
    render,
    same_roles,
)
from service.decisions.search import DecisionFilter, find_decisions
from service.errors import FieldError, Invalid, ServiceError
from service.rules import lifecycle
from service.rules.evaluated import evaluate_or_refuse, evaluation_body
from service.rules.language import FACT_CATALOG, compile_ruleset, parse_ruleset
from service.rules.language.problems import RulesetError
from service.services import Services

Name = Annotated[str, Parameter(max_length=100)]
MAX_YAML_BYTES = 512 * 1024


def _plain(answer: msgspec.Struct) -> dict[str, Any]:
    """An API handler's answer as the JSON object it is sent as (templates index it like one)."""
    plain: dict[str, Any] = msgspec.to_builtins(answer)
    return plain


def _services(request: Request[Any, Any, Any]) -> Services:
    services: Services = request.app.state.services
    return services


@get("/rulesets", opt=same_roles(api.list_rulesets), name="console-rulesets")
async def rulesets_page(request: Request[Any, Any, Any]) -> Response[Any]:
    kind = request.query_params.get("kind") or None
    if kind is not None and kind not in FACT_CATALOG:
        kind = None
    listing = _plain(await api.list_rulesets.fn(_services(request), kind))
    fleet = _plain(await api.ruleset_fleet.fn(_services(request)))
    return render(
        request,
        "rulesets.html",
        title="Rulesets",
        page=paginate(listing["rulesets"], page_number(request)),
        kind=kind,
        kinds=sorted(FACT_CATALOG),
        kind_defaults=listing["kind_defaults"],
        generation=listing["generation"],
        fleet=fleet,
    )


@get("/rulesets/{name:str}", opt=same_roles(api.get_ruleset))
async def ruleset_page(request: Request[Any, Any, Any], name: Name) -> Response[Any]:
    ruleset = _plain(await api.get_ruleset.fn(_services(request), name))
    versions = sorted(ruleset["versions"], key=lambda v: -int(v["version"]))
    audit_page = request.query_params.get("audit_page", "1")
    return render(
        request,
        "ruleset.html",
        title=name,
        ruleset=ruleset,
        page=paginate(versions, page_number(request)),
        audit=paginate(
            ruleset["audit"], int(audit_page) if audit_page.isdigit() and audit_page != "0" else 1
        ),
        can_author=may(principal(request), api.create_version),
        can_publish=may(principal(request), api.publish_version),
    )


def _error_lines(errors: list[dict[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    by_line: dict[int, list[dict[str, Any]]] = {}
    for error in errors:
        line = error.get("line")
        if isinstance(line, int):
            by_line.setdefault(line, []).append(error)
    return by_line


def _tests_by_engine(validation: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """The embedded tests as rows (one per test) with a cell per engine."""
    engines: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for test in validation.get("tests", []):
        engine = str(test.get("engine"))
        if engine not in engines:
            engines.append(engine)
        row = rows.setdefault(test["name"], {"name": test["name"], "engines": {}})
        row["engines"][engine] = test
    return sorted(engines), list(rows.values())


async def _version_context(
    request: Request[Any, Any, Any], name: str, version: int, against: str | None
) -> dict[str, Any]:
    services = _services(request)
    record = _plain(await api.get_version.fn(services, name, version))
    ruleset = _plain(await api.get_ruleset.fn(services, name))
    validation = record.get("validation") or {}
    errors = [
        {
            "field": e.get("field") or e.get("path"),
            "reason": e.get("reason") or e.get("message"),
            **{k: v for k, v in e.items() if k in ("line", "column", "rule_id")},
        }
        for e in validation.get("errors", [])
    ]
    active = ruleset.get("active_version")
    if against is None:
        against = "active" if active is not None and active != version else None
    diff: dict[str, Any] | None = None
    diff_problem: dict[str, Any] | None = None
    if against:
        try:
            diff = _plain(await api.diff_version.fn(services, name, version, against))
        except ServiceError as error:
            diff_problem = problem_context(error)
    engines, tests = _tests_by_engine(validation)
    trail = [entry for entry in ruleset["audit"] if (entry.get("detail") or {}).get("version") == version]
    me = principal(request)
    return {
        "title": f"{name} v{version}",
        "ruleset": ruleset,
        "version": record,
        "lines": record["yaml"].splitlines(),
        "errors": errors,
        "error_lines": _error_lines(errors),
        "warnings": validation.get("warnings", []),
        "engines": engines,
        "tests": tests,
        "validation_ok": validation.get("ok"),
        "against": against,
        "diff": diff,
        "diff_problem": diff_problem,
        "other_versions": [v["version"] for v in ruleset["versions"] if v["version"] != version],
        "trail": trail,
        "can_author": may(me, api.create_version),
        "can_publish": may(me, api.publish_version),
    }


@get("/rulesets/{name:str}/versions/{version:int}", opt=same_roles(api.get_version))
async def version_page(
    request: Request[Any, Any, Any], name: Name, version: Annotated[int, Parameter(ge=1)]
) -> Response[Any]:
    against = request.query_params.get("against") or None
    context = await _version_context(request, name, version, against)
    return render(request, "version.html", **context)


# --- the editor ---------------------------------------------------------------------------------------


@get("/rulesets/{name:str}/edit", opt=same_roles(api.create_version))
async def editor_page(request: Request[Any, Any, Any], name: Name) -> Response[Any]:
    services = _services(request)
    ruleset = _plain(await api.get_ruleset.fn(services, name))
    start = request.query_params.get("from")
    numbers = [v["version"] for v in ruleset["versions"]]
    base = (
        int(start) if start and start.isdigit() and int(start) in numbers else ruleset.get("active_version")
    )
    if base is None and numbers:
        base = max(numbers)
    text = ""
    if base is not None:
        text = (await api.get_version.fn(services, name, base)).yaml
    return render(request, "editor.html", title=f"New draft of {name}", name=name, text=text, base=base)


async def _submitted_yaml(request: Request[Any, Any, Any]) -> str:
    form = await request.form()
    upload = form.get("file")
    if isinstance(upload, UploadFile) and upload.filename:
        raw = await upload.read(MAX_YAML_BYTES + 1)
        if len(raw) > MAX_YAML_BYTES:
            raise Invalid("the file is too large", [FieldError("file", f"at most {MAX_YAML_BYTES} bytes")])
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("the file is not UTF-8", [FieldError("file", "save it as UTF-8")]) from None
    text = form.get("yaml")
    if not isinstance(text, str) or not text.strip():
        raise Invalid("empty ruleset", [FieldError("yaml", "write the ruleset or choose a file")])
    return text.replace("\r\n", "\n")


@post("/rulesets/{name:str}/versions", opt=same_roles(api.create_version), status_code=303)
async def create_draft(request: Request[Any, Any, Any], name: Name) -> Response[Any]:
    text = ""
    try:
        text = await _submitted_yaml(request)
        created = await lifecycle.create_version(
            _services(request).sessions,
            _services(request).trials,
            name,
            text,
            principal(request).name,
            source=f"{name}.yaml",
        )
    except ServiceError as error:
        problem = problem_context(error)
        lines = text.splitlines()
        return render(
            request,
            "editor.html",
            status_code=error.status,
            title=f"New draft of {name}",
            name=name,
            text=text,
            base=None,
            problem=problem,
            lines=lines,
            error_lines=_error_lines(problem["errors"]),
        )
    return done(f"/console/rulesets/{name}/versions/{created.record.version}", "created")


# --- lifecycle buttons: each refused with the API's reason where the API refuses -------------------------


async def _refused(
    request: Request[Any, Any, Any], name: str, version: int, error: ServiceError
) -> Response[Any]:
    context = await _version_context(request, name, version, None)
    return render(
        request, "version.html", status_code=error.status, refusal=problem_context(error), **context
    )


@post("/rulesets/{name:str}/versions/{version:int}/publish", opt=same_roles(api.publish_version))
async def publish(request: Request[Any, Any, Any], name: Name, version: FromPath[int]) -> Response[Any]:
    try:
        await api.publish_version.fn(_services(request), request, name, version)
    except ServiceError as error:
        return await _refused(request, name, version, error)
    return done(f"/console/rulesets/{name}/versions/{version}", "published")


@post("/rulesets/{name:str}/versions/{version:int}/shadow", opt=same_roles(api.shadow_version))
async def shadow(request: Request[Any, Any, Any], name: Name, version: FromPath[int]) -> Response[Any]:
    try:
        await api.shadow_version.fn(_services(request), request, name, version)
    except ServiceError as error:
        return await _refused(request, name, version, error)
    return done(f"/console/rulesets/{name}/versions/{version}", "shadowed")


@post("/rulesets/{name:str}/versions/{version:int}/unshadow", opt=same_roles(api.unshadow_version))
async def unshadow(request: Request[Any, Any, Any], name: Name, version: FromPath[int]) -> Response[Any]:
    try:
        await api.unshadow_version.fn(_services(request), request, name, version)
    except ServiceError as error:
        return await _refused(request, name, version, error)
    return done(f"/console/rulesets/{name}/versions/{version}", "unshadowed")


@post("/rulesets/{name:str}/versions/{version:int}/rollback", opt=same_roles(api.rollback_ruleset))
async def rollback(request: Request[Any, Any, Any], name: Name, version: FromPath[int]) -> Response[Any]:
    """Make this (previously published) version the active one again."""
    services = _services(request)
    try:
        await lifecycle.rollback(services.sessions, name, version, principal(request).name)
    except ServiceError as error:
        return await _refused(request, name, version, error)
    await services.rules.follow_change()
    return done(f"/console/rulesets/{name}/versions/{version}", "rolled-back")


# --- try it ----------------------------------------------------------------------------------------------


def _fact_fields(kind: str, declared: dict[str, str]) -> list[dict[str, Any]]:
    catalog = FACT_CATALOG.get(kind, {})
    return [
        {"name": fact, "type": type_, "declared": fact in declared, "id": "fact-" + fact.replace(".", "-")}
        for fact, type_ in sorted(catalog.items(), key=lambda item: (item[0] not in declared, item[0]))
    ]


def _convert(fact: str, type_: str, raw: str) -> Any:
    text = raw.strip()
    try:
        if type_ == "int":
            return int(text)
        if type_ == "float":
            return float(text)
    except ValueError:
        raise Invalid(
            f"{fact}: expected {type_}", [FieldError(fact, f"expected a number ({type_})")]
        ) from None
    if type_ == "bool":
        return text == "true"
    if type_ == "list[str]":
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _facts(fields: list[dict[str, Any]], values: dict[str, str]) -> dict[str, Any]:
    """Nested facts (`order.channel` -> {"order": {"channel": ...}}) from the filled-in fields."""
    facts: dict[str, Any] = {}
    problems: list[FieldError] = []
    for field in fields:
        raw = values.get(field["name"], "")
        if raw == "" and field["type"] != "bool":
            continue
        try:
            value = _convert(field["name"], field["type"], raw)
        except Invalid as error:
            problems.extend(error.errors)
            continue
        head, _, tail = field["name"].partition(".")
        facts.setdefault(head, {})[tail] = value
    if problems:
        raise Invalid("some facts are not valid", problems)
    return facts


@get("/rulesets/{name:str}/versions/{version:int}/try", opt=same_roles(api.evaluate_version))
async def try_page(request: Request[Any, Any, Any], name: Name, version: FromPath[int]) -> Response[Any]:
    """A form generated from the kind's facts; submitted (GET: it changes nothing), the full trace."""
    services = _services(request)
    record = await lifecycle.stored_version(services.sessions, name, version)
    document = parse_ruleset(record.yaml_text, f"{name}@{version}")
    fields = _fact_fields(record.kind, dict(document.facts))
    values = {field["name"]: request.query_params.get(field["name"], "") for field in fields}
    engine = request.query_params.get("engine") or services.settings.rules.engine
    if engine not in ("python", "durable"):
        engine = services.settings.rules.engine
    evaluation: dict[str, Any] | None = None
    problem: dict[str, Any] | None = None
    if request.query_params.get("run"):
        try:
            facts = _facts(fields, values)
            evaluator = compile_ruleset(document, engine, version=version)
            outcome = evaluate_or_refuse(lambda: evaluator.evaluate(facts, "full"))
            evaluation = evaluation_body(name, version, record.sha256, outcome, {"facts": facts})
        except ServiceError as error:
            problem = problem_context(error)
        except RulesetError as error:
            problem = {"title": "Cannot evaluate", "detail": str(error), "errors": [], "status": 422}
    return render(
        request,
        "try.html",
        title=f"Try {name} v{version}",
        name=name,
        version=version,
        kind=record.kind,
        status=record.status,
        fields=fields,
        values=values,
        engine=engine,
        evaluation=evaluation,
        problem=problem,
        status_code=200 if problem is None else 422,
    )


# --- shadow ----------------------------------------------------------------------------------------------


@get("/rulesets/{name:str}/shadow", opt=any_roles(api.get_ruleset))
async def shadow_page(request: Request[Any, Any, Any], name: Name) -> Response[Any]:
    """The differences recorded between the active and the shadow version over recent decisions."""
    services = _services(request)
    ruleset = _plain(await api.get_ruleset.fn(services, name))
    number = page_number(request)
    async with services.sessions() as session:
        found, more = await find_decisions(
            session, DecisionFilter(ruleset=name, with_shadow=True), (number - 1) * 25, 25
        )
    return render(
        request,
        "shadow.html",
        title=f"{name}: shadow differences",
        ruleset=ruleset,
        page=Page(found, number, more),
    )
