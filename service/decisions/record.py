"""A decision as answered and as logged: id, kind, the decision itself, the ruleset version, trace, timings,
and (logged only) the inputs it read beyond its request and facts."""

from __future__ import annotations

from datetime import UTC, datetime
from hashlib import blake2b
from typing import Any, ClassVar

import msgspec
from msgspec import Raw

_encode = msgspec.json.Encoder().encode


def iso_time(moment: datetime) -> str:
    """`moment.isoformat()`; at UTC made by msgspec's encoder (the same text, a quarter of the time)."""
    if moment.tzinfo is not UTC:
        return moment.isoformat()
    return f"{_encode(moment)[1:-2].decode()}+00:00"  # b'"YYYY-MM-DDTHH:MM:SS[.ffffff]Z"'


def _json_and_digest(trace: dict[str, Any]) -> tuple[bytes, str]:
    encoded = _encode(trace)
    return encoded, blake2b(encoded, digest_size=16).hexdigest()


def trace_json(trace: dict[str, Any]) -> tuple[bytes, str]:
    """A trace's JSON and the digest that names it in the decision log's table of traces: a kept trace's
    own, made once with it; any other's, made now."""
    if type(trace) is KeptTrace:
        return trace.encoded, trace.digest
    return _json_and_digest(trace)


class KeptTrace(dict[str, Any]):
    """A trace answered alike by many decisions (the `rules` trace of an availability answer for the same
    SKUs), kept with the shared answers it was read from and read only: its JSON and the digest the
    decision log names it by are made once, with it, instead of by the log for every decision."""

    __slots__ = ("digest", "encoded")
    encoded: bytes
    digest: str

    def __init__(self, trace: dict[str, Any]) -> None:
        super().__init__(trace)
        self.encoded, self.digest = _json_and_digest(trace)


class DecisionRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    kind: str
    created_at: datetime
    request: dict[str, Any]
    decision: dict[str, Any]
    ruleset: dict[str, Any]
    trace: dict[str, Any] | None
    timings: dict[str, float]
    shadow: dict[str, Any] | None = None
    subject: str | None = None
    idempotency_key: str | None = None
    actor: str | None = None
    # what the decision read beyond its request and facts, logged (not answered) so that a fuller trace can
    # be recomputed later: for an allocation, the stock it planned on (`service.decisions.explain`)
    inputs: dict[str, Any] | None = None
    extra: dict[str, Any] = msgspec.field(default_factory=dict)

    def response(self) -> dict[str, Any]:
        """The body a decision endpoint answers with."""
        out: dict[str, Any] = {
            "decision_id": self.id,
            "kind": self.kind,
            "created_at": iso_time(self.created_at),
            "decision": self.decision,
            "ruleset": self.ruleset,
            "trace": self.trace,
            "timings": self.timings,
        }
        if self.shadow is not None:
            out["shadow"] = self.shadow
        out.update(self.extra)
        return out

    def logged(self) -> dict[str, Any]:
        """The body `GET /v1/decisions/{id}` answers with: the response plus the request."""
        out = self.response()
        out["request"] = self.request
        if self.actor is not None:
            out["actor"] = self.actor
        if self.inputs is not None:
            out["inputs"] = self.inputs
        return out

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "id",
        "kind",
        "created_at",
        "subject",
        "idempotency_key",
        "actor",
        "ruleset_name",
        "ruleset_version",
        "ruleset_sha256",
        "request",
        "decision",
        "trace_digest",
        "shadow",
        "timings",
        "inputs",
    )

    def row(self, trace_digest: str | None) -> tuple[Any, ...]:
        """Column values of the decision log table, in `COLUMNS` order (what the log writer inserts), the
        JSON columns encoded now (`msgspec.Raw`, which the writer's JSON encoder copies as they are): the
        trace itself goes to the table of traces, the row names it by `trace_digest`."""
        ruleset = self.ruleset
        shadow, inputs = self.shadow, self.inputs
        return (
            self.id,
            self.kind,
            self.created_at,
            self.subject,
            self.idempotency_key,
            self.actor,
            str(ruleset.get("name", "")),
            int(ruleset.get("version", 0)),
            str(ruleset.get("sha256", "")),
            Raw(_encode(self.request)),
            Raw(_encode(self.decision)),
            trace_digest,
            None if shadow is None else Raw(_encode(shadow)),
            Raw(_encode(self.timings)),
            None if inputs is None else Raw(_encode(inputs)),
        )
