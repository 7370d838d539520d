"""Approval routing shared by transfers and markdowns: apply a ruleset's outcome so the requester never
approves their own request.

Approvers are roles. When the requester holds a role the ruleset names as an approver, that approver is
replaced by the next level above it in the escalation chain (the ruleset's `escalation` list, else the
organisation's default chain for the decision kind) that is neither the requester's role nor already an
approver. Every replacement is recorded for the trace. If nobody above remains, the request is rejected,
since it cannot be approved by someone other than the requester.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.domain.errors import PolicyError

OUTCOMES = ("approve", "route", "reject")
# how the approvals of a routed request add up: `any` counts distinct people holding any approver role
# (`approvals_required` of them, 1 by default); `all` needs one person per approver role
APPROVAL_MODES = ("any", "all")


@dataclass(frozen=True, slots=True)
class Requester:
    id: str
    role: str


@dataclass(frozen=True, slots=True)
class Substitution:
    replaced: str
    by: str | None
    why: str

    def to_dict(self) -> dict[str, Any]:
        return {"replaced": self.replaced, "by": self.by, "why": self.why}


@dataclass(frozen=True, slots=True)
class ApprovalDecision:
    outcome: str
    reason: str | None
    approvers: tuple[str, ...]
    sla_hours: int | None
    escalation: tuple[str, ...]
    substitutions: tuple[Substitution, ...] = field(default=())
    approval: str = "any"
    approvals_required: int = 1

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"outcome": self.outcome, "reason": self.reason}
        if self.outcome == "route":
            out["approvers"] = list(self.approvers)
            out["sla_hours"] = self.sla_hours
            out["escalation"] = list(self.escalation)
            out["approval"] = self.approval
            out["approvals_required"] = self.approvals_required
        return out


def _string_list(result: Mapping[str, Any], key: str) -> list[str]:
    raw = result.get(key) or []
    if not isinstance(raw, list | tuple) or not all(isinstance(r, str) for r in raw):
        raise PolicyError(key, "expected a list of roles")
    return list(raw)


def _next_level(role: str, chain: Sequence[str], excluded: set[str]) -> str | None:
    """The first role above `role` in the chain not in `excluded`; from the chain's start if `role` is
    not in it."""
    start = chain.index(role) + 1 if role in chain else 0
    for candidate in chain[start:]:
        if candidate not in excluded:
            return candidate
    return None


def apply_approval(
    result: Mapping[str, Any], requester: Requester, default_chain: Sequence[str]
) -> ApprovalDecision:
    """Turn a transfer or markdown ruleset result into a decision that keeps the requester out of it."""
    outcome = result.get("outcome")
    if outcome not in OUTCOMES:
        raise PolicyError("outcome", f"expected one of {', '.join(OUTCOMES)}")
    reason = result.get("reason")
    sla = result.get("sla_hours")
    if sla is not None and (isinstance(sla, bool) or not isinstance(sla, int) or sla < 0):
        raise PolicyError("sla_hours", "expected a whole number of hours >= 0")
    approvers = _string_list(result, "approvers")
    escalation = _string_list(result, "escalation")
    mode = result.get("approval") or "any"
    if mode not in APPROVAL_MODES:
        raise PolicyError("approval", f"expected one of {', '.join(APPROVAL_MODES)}")
    required = result.get("approvals_required")
    if required is not None and (isinstance(required, bool) or not isinstance(required, int) or required < 1):
        raise PolicyError("approvals_required", "expected a whole number >= 1")
    if required is not None and mode == "all":
        raise PolicyError("approvals_required", "approval: all already needs one approval per approver role")
    if outcome != "route":
        return ApprovalDecision(str(outcome), None if reason is None else str(reason), (), None, ())
    if not approvers:
        raise PolicyError("approvers", "a routed request needs at least one approver")
    chain = escalation if escalation else list(default_chain)
    substitutions: list[Substitution] = []
    final: list[str] = []
    for approver in approvers:
        if approver != requester.role:
            if approver not in final:
                final.append(approver)
            continue
        excluded = {requester.role, *final, *approvers}
        nxt = _next_level(approver, chain, excluded)
        if nxt is None:
            # the default chain may reach higher than the ruleset's own escalation list
            nxt = _next_level(approver, default_chain, excluded)
        substitutions.append(
            Substitution(approver, nxt, f"requester {requester.id} holds the role {approver}")
        )
        if nxt is not None:
            final.append(nxt)
    final_escalation: list[str] = []
    for role in escalation:
        if role == requester.role:
            substitutions.append(
                Substitution(role, None, f"requester {requester.id} removed from the escalation chain")
            )
        elif role not in final_escalation:
            final_escalation.append(role)
    if not final:
        return ApprovalDecision(
            "reject",
            "no approver other than the requester is available",
            (),
            None,
            (),
            tuple(substitutions),
        )
    return ApprovalDecision(
        "route",
        None if reason is None else str(reason),
        tuple(final),
        sla,
        tuple(final_escalation),
        tuple(substitutions),
        str(mode),
        len(final) if mode == "all" else (required or 1),
    )
