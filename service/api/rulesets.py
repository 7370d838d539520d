"""Ruleset endpoints: list, read, create versions, diff, dry-run, publish, shadow, roll back.

Thin controllers over `service.rules.lifecycle` (changes) and `service.rules.repository` (reads).
Responses that describe what is live include `served`: the version this worker's registry snapshot
evaluates, which is what decisions on this worker use (it follows the database within seconds).
"""

from __future__ import annotations

import asyncio
import os
import re
from typing import Annotated, Any, Literal

import msgspec
from litestar import Request, Response, Router, delete, get, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.openapi.spec import Example
from litestar.params import JSONBody, Parameter, QueryParameter

from service.api.body import unsupported_media
from service.api.openapi import YAML_TYPES, OptionalBody, YamlBody, answers, links
from service.api.ruleset_answers import (
    ActiveEvaluated,
    Fleet,
    RulesetDetail,
    RulesetDiff,
    RulesetListing,
    RulesetOut,
    Served,
    VersionCreated,
    VersionEvaluated,
    VersionFull,
    VersionShadowed,
    VersionSummary,
)
from service.db.base import INTEGER_MAX
from service.errors import Conflict, FieldError, Invalid, Malformed, NotFound
from service.rules import lifecycle
from service.rules import repository as repo
from service.rules.evaluated import cannot_evaluate, evaluate_or_refuse, evaluation_body
from service.rules.fleet import fleet
from service.rules.language import (
    RuleEvaluationError,
    RulesetError,
    diff_rulesets,
    facts_bound_problem,
    parse_ruleset,
)
from service.rules.registry import RegistrySnapshot
from service.rules.trial import dry_run
from service.security import principal_of, requires
from service.services import Services

READ_ROLES = ("author", "publisher", "planner")

Name = Annotated[
    str,
    Parameter(
        description="ruleset name (kebab-case)",
        max_length=100,
        examples=[Example(summary="a shipped ruleset", value="channel-priority")],
    ),
]
VersionNumber = Annotated[
    int,
    Parameter(
        description="version number",
        ge=1,
        le=INTEGER_MAX,
        examples=[Example(summary="the first version", value=1)],
    ),
]
AGAINST = re.compile(r"active|[1-9][0-9]{0,9}")
TraceLevel = Literal["none", "rules", "full"]


class VersionIn(msgspec.Struct, forbid_unknown_fields=True):
    """A ruleset's YAML text: as JSON `{"yaml": ...}`, or sent as the body itself in a YAML media type."""

    yaml: Annotated[str, msgspec.Meta(min_length=1)]

    @classmethod
    def from_media(cls, media: str, raw: bytes) -> VersionIn:
        if media not in YAML_TYPES:
            raise unsupported_media(
                media, "application/yaml (or text/yaml) or application/json {'yaml': ...}"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Malformed("the body is not UTF-8", [FieldError("body", str(exc))]) from None
        return cls(text)  # an empty body never gets here (`require_body`)


class EvaluateIn(msgspec.Struct, forbid_unknown_fields=True):
    facts: dict[str, Any]
    trace: TraceLevel = "full"
    engine: Literal["durable", "python"] | None = None


class ActiveEvaluateIn(msgspec.Struct, forbid_unknown_fields=True):
    facts: dict[str, Any]
    trace: TraceLevel = "rules"


class RollbackIn(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    version: Annotated[int, msgspec.Meta(ge=1, le=INTEGER_MAX)] | None = None


TO_PREVIOUS = RollbackIn()  # a rollback sent without a body: to the version active before


def _served(snapshot: RegistrySnapshot, name: str) -> Served:
    """What this worker evaluates for `name` right now."""
    active = snapshot.get(name)
    view: dict[str, Any] = {"pid": os.getpid(), "generation": snapshot.generation}
    if active is None:
        view.update(version=None, sha256=None, shadow=None)
    else:
        described = active.describe()
        view.update(
            version=active.version, sha256=active.sha256, engine=active.engine, shadow=described["shadow"]
        )
    return msgspec.convert(view, Served)


def _summary(record: repo.VersionRecord) -> VersionSummary:
    return msgspec.convert(record.summary(), VersionSummary)


def _full(record: repo.VersionRecord) -> VersionFull:
    body = {**record.summary(), "yaml": record.yaml_text, "validation": record.validation}
    return msgspec.convert(body, VersionFull)


@get("/", opt=requires(*READ_ROLES), operation_id="listRulesets")
async def list_rulesets(
    services: NamedDependency[Services],
    kind: Annotated[str | None, QueryParameter(name="kind", description="only rulesets of this kind")] = None,
) -> RulesetListing:
    snapshot = services.rules.snapshot()
    async with services.sessions() as session:
        records = await repo.list_rulesets(session, kind)
    listing = {
        "rulesets": [{**record.to_dict(), "served": _served(snapshot, record.name)} for record in records],
        "kind_defaults": dict(snapshot.kind_defaults),
        "generation": snapshot.generation,
    }
    return msgspec.convert(listing, RulesetListing, from_attributes=True)


@get("/fleet", opt=requires(*READ_ROLES), operation_id="getRulesetFleet")
async def ruleset_fleet(services: NamedDependency[Services]) -> Fleet:
    """Every service worker's served generation and versions, from the heartbeats they write."""
    async with services.sessions() as session:
        generation = await repo.current_generation(session)
        view = await fleet(session, generation, services.rules.heartbeat_seconds)
    return msgspec.convert(view, Fleet)


@get("/{name:str}", opt=requires(*READ_ROLES), operation_id="getRuleset")
async def get_ruleset(services: NamedDependency[Services], name: Name) -> RulesetDetail:
    snapshot = services.rules.snapshot()
    async with services.sessions() as session:
        record = await repo.get_ruleset(session, name)
        if record is None:
            raise NotFound(f"no ruleset named {name!r}", [FieldError("name", f"no ruleset named {name!r}")])
        versions = await repo.list_versions(session, name)
        trail = await repo.audit_trail(session, name)
    detail = {
        **record.to_dict(),
        "served": _served(snapshot, name),
        "versions": [v.summary() for v in versions],
        "audit": [entry.to_dict() for entry in trail],
    }
    return msgspec.convert(detail, RulesetDetail, from_attributes=True)


VERSION_LINK = {"name": "$request.path.name", "version": "$response.body#/version"}


@post(
    "/{name:str}/versions",
    opt={
        **requires("author"),
        **answers(415),
        **links(
            getRulesetVersion=VERSION_LINK,
            publishRulesetVersion=VERSION_LINK,
            evaluateRulesetVersion=VERSION_LINK,
            diffRulesetVersion=VERSION_LINK,
            shadowRulesetVersion=VERSION_LINK,
            unshadowRulesetVersion=VERSION_LINK,
        ),
    },
    operation_id="createRulesetVersion",
    responses={200: ResponseSpec(VersionCreated, description="The same text is already a version of it")},
    operation_class=YamlBody,
)
async def create_version(
    services: NamedDependency[Services],
    request: Request[Any, Any, Any],
    name: Name,
    data: JSONBody[VersionIn],
) -> Response[VersionCreated]:
    text = data.yaml
    created = await lifecycle.create_version(
        services.sessions, services.trials, name, text, principal_of(request).name, source=f"{name}.yaml"
    )
    body = {**created.record.summary(), "created": created.created, "validation": created.report}
    return Response(msgspec.convert(body, VersionCreated), status_code=201 if created.created else 200)


@get("/{name:str}/versions/{version:int}", opt=requires(*READ_ROLES), operation_id="getRulesetVersion")
async def get_version(services: NamedDependency[Services], name: Name, version: VersionNumber) -> VersionFull:
    return _full(await lifecycle.stored_version(services.sessions, name, version))


@get(
    "/{name:str}/versions/{version:int}/diff",
    opt={**requires(*READ_ROLES), **answers(409)},
    operation_id="diffRulesetVersion",
)
async def diff_version(
    services: NamedDependency[Services],
    name: Name,
    version: VersionNumber,
    against: Annotated[
        str,
        QueryParameter(
            name="against", description="`active` or a version number", pattern=f"^(?:{AGAINST.pattern})$"
        ),
    ] = "active",
) -> RulesetDiff:
    if not AGAINST.fullmatch(against) or (against != "active" and int(against) > INTEGER_MAX):
        raise Invalid(
            "bad comparison target",
            [FieldError("query.against", f"expected 'active' or a version number, got {against!r}")],
        )
    new = await lifecycle.stored_version(services.sessions, name, version)
    if against == "active":
        async with services.sessions() as session:
            record = await repo.get_ruleset(session, name)
        if record is None or record.active_version is None:
            reason = f"ruleset {name!r} has no active version to compare with"
            raise Conflict(reason, [FieldError("query.against", reason)])
        base_number = record.active_version
    else:
        base_number = int(against)
    try:
        old = await lifecycle.stored_version(services.sessions, name, base_number)
    except NotFound:
        reason = f"ruleset {name!r} has no version {base_number}"
        raise NotFound(reason, [FieldError("query.against", reason)]) from None
    changes = diff_rulesets(
        parse_ruleset(old.yaml_text, f"{name}@{old.version}"), parse_ruleset(new.yaml_text)
    )
    diff = {
        "name": name,
        "from": {"version": old.version, "sha256": old.sha256},
        "to": {"version": new.version, "sha256": new.sha256},
        "identical": old.sha256 == new.sha256,
        "diff": changes,
    }
    return msgspec.convert(diff, RulesetDiff)


def _bounded_facts(facts: dict[str, Any]) -> dict[str, Any]:
    problem = facts_bound_problem(facts)
    if problem is not None:
        raise Invalid("the facts are out of bounds", [FieldError(*problem)])
    return facts


@post(
    "/{name:str}/versions/{version:int}/evaluate",
    opt=requires(*READ_ROLES),
    operation_id="evaluateRulesetVersion",
    status_code=200,
)
async def evaluate_version(
    services: NamedDependency[Services], name: Name, version: VersionNumber, data: JSONBody[EvaluateIn]
) -> VersionEvaluated:
    """Dry run: evaluate any stored version on the given facts (full trace unless asked otherwise), in the
    trial child process under a time limit, so that no draft can hold this worker's event loop."""
    record = await lifecycle.stored_version(services.sessions, name, version)
    facts = _bounded_facts(data.facts)
    engine = data.engine or services.settings.rules.engine
    try:
        evaluation = await asyncio.to_thread(
            dry_run,
            services.trials,
            record.yaml_text,
            f"{name}@{version}",
            facts,
            data.trace,
            engine,
            version,
        )
    except RulesetError as exc:
        raise lifecycle.InvalidRuleset(exc.problems) from None
    except RuleEvaluationError as exc:
        raise cannot_evaluate(exc) from None
    body = evaluation_body(name, version, record.sha256, evaluation, {"status": record.status})
    return msgspec.convert(body, VersionEvaluated)


@post(
    "/{name:str}/evaluate",
    opt=requires("decide", *READ_ROLES),
    operation_id="evaluateActiveRuleset",
    status_code=200,
)
async def evaluate_active(
    services: NamedDependency[Services], name: Name, data: JSONBody[ActiveEvaluateIn]
) -> ActiveEvaluated:
    """Evaluate the active version exactly as this worker serves it (one registry snapshot), with its shadow."""
    _bounded_facts(data.facts)
    snapshot = services.rules.snapshot()
    active = snapshot.get(name)
    if active is None:
        reason = f"ruleset {name!r} has no active version on this worker"
        raise NotFound(reason, [FieldError("name", reason)])
    outcome = evaluate_or_refuse(lambda: active.evaluate(data.facts, data.trace))
    comparison = active.shadow_evaluate(data.facts, outcome)
    body = evaluation_body(
        name,
        outcome.version,
        outcome.sha256,
        outcome.evaluation,
        {
            "served": {"pid": os.getpid(), "generation": snapshot.generation},
            "shadow": comparison.to_dict() if comparison is not None else None,
        },
    )
    return msgspec.convert(body, ActiveEvaluated)


@post(
    "/{name:str}/versions/{version:int}/publish",
    opt={**requires("publisher"), **answers(409)},
    operation_id="publishRulesetVersion",
    status_code=200,
)
async def publish_version(
    services: NamedDependency[Services], request: Request[Any, Any, Any], name: Name, version: VersionNumber
) -> VersionSummary:
    record = await lifecycle.publish(
        services.sessions, services.trials, name, version, principal_of(request).name
    )
    await services.rules.follow_change()
    return _summary(record)


@post(
    "/{name:str}/versions/{version:int}/shadow",
    opt={**requires("publisher"), **answers(409)},
    operation_id="shadowRulesetVersion",
    status_code=200,
)
async def shadow_version(
    services: NamedDependency[Services], request: Request[Any, Any, Any], name: Name, version: VersionNumber
) -> VersionShadowed:
    record = await lifecycle.set_shadow(services.sessions, name, version, principal_of(request).name)
    await services.rules.follow_change()
    return msgspec.convert({**record.summary(), "shadow": True}, VersionShadowed)


@delete(
    "/{name:str}/versions/{version:int}/shadow",
    opt=requires("publisher"),
    operation_id="unshadowRulesetVersion",
    status_code=204,
)
async def unshadow_version(
    services: NamedDependency[Services], request: Request[Any, Any, Any], name: Name, version: VersionNumber
) -> None:
    await lifecycle.clear_shadow(services.sessions, name, version, principal_of(request).name)
    await services.rules.follow_change()


@post(
    "/{name:str}/rollback",
    opt={**requires("publisher"), **answers(409)},
    operation_id="rollbackRuleset",
    status_code=200,
    operation_class=OptionalBody,
)
async def rollback_ruleset(
    services: NamedDependency[Services],
    request: Request[Any, Any, Any],
    name: Name,
    data: JSONBody[RollbackIn] = TO_PREVIOUS,
) -> VersionSummary:
    record = await lifecycle.rollback(services.sessions, name, data.version, principal_of(request).name)
    await services.rules.follow_change()
    return _summary(record)


@post(
    "/{name:str}/kind-default",
    opt={**requires("publisher"), **answers(409)},
    operation_id="makeRulesetKindDefault",
    status_code=200,
)
async def make_kind_default(
    services: NamedDependency[Services], request: Request[Any, Any, Any], name: Name
) -> RulesetOut:
    """Make this ruleset the one that answers decisions of its kind that name no ruleset."""
    await lifecycle.set_kind_default(services.sessions, name, principal_of(request).name)
    await services.rules.follow_change()
    async with services.sessions() as session:
        record = await repo.get_ruleset(session, name)
    assert record is not None  # set_kind_default raised NotFound otherwise
    return msgspec.convert(record.to_dict(), RulesetOut)


router = Router(
    path="/v1/rulesets",
    route_handlers=[
        list_rulesets,
        ruleset_fleet,
        get_ruleset,
        create_version,
        get_version,
        diff_version,
        evaluate_version,
        evaluate_active,
        publish_version,
        shadow_version,
        unshadow_version,
        rollback_ruleset,
        make_kind_default,
    ],
    tags=["rulesets"],
)
