"""What the ruleset endpoints answer, as msgspec Structs: the handlers return these, so the OpenAPI
document describes each answer from the same declaration that encodes it.

`service.rules` keeps its plain records (`to_dict`, `summary`); the handlers convert them here, at the
API edge, with `msgspec.convert`, which refuses a key the Struct does not declare, so nothing is dropped. Times stay the ISO 8601 strings those records produce (`+00:00`).
Free-form parts (a rule's result, a trace, a validation report, a diff) stay JSON objects.
"""

from __future__ import annotations

from typing import Any

import msgspec

from service.api.answers import Answer, Timestamp


class ShadowRef(Answer):
    version: int
    sha256: str


class Served(Answer, kw_only=True, omit_defaults=True):
    """What this worker evaluates for a ruleset right now (`version` null: nothing active here)."""

    pid: int
    generation: int
    version: int | None
    sha256: str | None
    engine: str | None = None
    shadow: ShadowRef | None


class RulesetOut(Answer):
    """A ruleset name with its kind and its active and shadow pointers."""

    name: str
    kind: str
    active_version: int | None
    shadow_version: int | None
    kind_default: bool
    updated_at: Timestamp


class ListedRuleset(RulesetOut):
    served: Served


class RulesetListing(Answer):
    rulesets: list[ListedRuleset]
    kind_defaults: dict[str, str]
    generation: int


class VersionSummary(Answer):
    """A version's metadata without its text or validation report."""

    name: str
    version: int
    kind: str
    status: str
    sha256: str
    description: str
    author: str
    created_at: Timestamp
    publisher: str | None
    published_at: Timestamp | None
    retired_at: Timestamp | None


class VersionFull(VersionSummary):
    """A version with its YAML text and validation report."""

    yaml: str
    validation: dict[str, Any]


class VersionCreated(VersionSummary):
    """A version just stored (`created`), or the existing one with the same text (`created: false`)."""

    created: bool
    validation: dict[str, Any]


class VersionShadowed(VersionSummary):
    shadow: bool


class AuditEntry(Answer):
    at: Timestamp
    actor: str
    action: str
    subject: str
    detail: dict[str, Any]


class RulesetDetail(RulesetOut):
    served: Served
    versions: list[VersionSummary]
    audit: list[AuditEntry]


class DiffEnd(Answer):
    version: int
    sha256: str


class RulesetDiff(Answer):
    name: str
    from_: DiffEnd = msgspec.field(name="from")
    to: DiffEnd
    identical: bool
    diff: dict[str, Any]


class RulesetRef(Answer):
    name: str
    version: int
    sha256: str


class Evaluated(Answer, kw_only=True):
    """One evaluation: the merged result, the rules that matched in firing order, and the trace."""

    ruleset: RulesetRef
    result: dict[str, Any]
    matched: list[str]
    used_default: bool
    engine: str
    elapsed_us: int | float
    trace: dict[str, Any] | None


class VersionEvaluated(Evaluated, kw_only=True):
    status: str


class Worker(Answer):
    pid: int
    generation: int


class ShadowEvaluated(Answer):
    """What the shadow version decided on the same facts, and where it differs (`error`: it failed)."""

    ruleset: RulesetRef
    result: dict[str, Any] | None
    matched: list[str] | None
    differences: dict[str, dict[str, Any]]
    error: str | None


class ActiveEvaluated(Evaluated, kw_only=True):
    served: Worker
    shadow: ShadowEvaluated | None


class FleetWorker(Answer):
    """One service worker's heartbeat: what it serves, whether it is `alive` and `current`."""

    worker: str
    host: str
    pid: int
    engine: str
    generation: int
    current: bool
    alive: bool
    served: list[dict[str, Any]]
    reload_error: str | None
    started_at: Timestamp
    seen_at: Timestamp


class Fleet(Answer):
    generation: int
    workers: list[FleetWorker]
    alive: int
    behind: int
    heartbeat_seconds: int | float
