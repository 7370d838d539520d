"""The rules of an approval case, as pure functions: who may act on it, when its approvals are enough,
where it escalates to.

A case names the roles that may approve it now (`approvers`) and how their approvals add up:
- `any`: `required` distinct people, each holding one of the approver roles;
- `all`: one person per approver role (`required` is the number of roles).
Only approvals given under a role that is an approver now count, so after an escalation the new level
decides. One person counts once, and the requester never acts on their own request.
Escalation moves the case one level up its chain: the next role above becomes the only approver.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from service.domain.markdown import MARKDOWN_CHAIN
from service.domain.transfer import TRANSFER_CHAIN

# the people's roles approvals are routed to: both chains of command, and finance
APPROVER_ROLES: tuple[str, ...] = tuple(dict.fromkeys((*TRANSFER_CHAIN, *MARKDOWN_CHAIN, "finance")))


@dataclass(frozen=True, slots=True)
class Approval:
    person: str
    role: str


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why someone may not act: `status` is 403 (not allowed) or 409 (not now)."""

    status: int
    field: str
    reason: str


def chain_above(
    approvers: Sequence[str], escalation: Sequence[str], default_chain: Sequence[str], requester_role: str
) -> tuple[str, ...]:
    """The roles a case escalates to, in order: those of its chain (the ruleset's `escalation`, else the
    default chain of its kind) above the highest approver; the whole chain when no approver is in it."""
    chain = [role for role in (escalation or default_chain) if role != requester_role]
    placed = [chain.index(role) for role in approvers if role in chain]
    start = max(placed) + 1 if placed else 0
    return tuple(role for role in chain[start:] if role not in approvers)


def counted(approvers: Collection[str], approvals: Sequence[Approval]) -> list[Approval]:
    """The approvals that count now: under a current approver role, one per person."""
    seen: set[str] = set()
    out: list[Approval] = []
    for approval in approvals:
        if approval.role in approvers and approval.person not in seen:
            seen.add(approval.person)
            out.append(approval)
    return out


def satisfied(mode: str, approvers: Sequence[str], required: int, approvals: Sequence[Approval]) -> bool:
    valid = counted(approvers, approvals)
    if mode == "all":
        return set(approvers) <= {a.role for a in valid}
    return len(valid) >= required


def acting_role(
    mode: str, approvers: Sequence[str], approvals: Sequence[Approval], holds: Callable[[str], bool]
) -> str | None:
    """The approver role a person acts under: under `all`, the first role they hold that still lacks an
    approval (else any they hold); under `any`, the first they hold. None when they hold none."""
    held = [role for role in approvers if holds(role)]
    if not held:
        return None
    if mode == "all":
        covered = {a.role for a in counted(approvers, approvals)}
        for role in held:
            if role not in covered:
                return role
    return held[0]


def refusal(
    person: str,
    requesters: Collection[str],
    status: str,
    approvers: Sequence[str],
    approvals: Sequence[Approval],
    holds: Callable[[str], bool],
    verdict: str,
) -> Refusal | None:
    """Why `person` may not approve or reject the case now, or None when they may."""
    if status != "pending":
        return Refusal(409, "status", f"the case is {status}, no longer pending")
    if person in requesters:
        return Refusal(403, "actor", f"{person} filed this request and may not act on it")
    if not any(holds(role) for role in approvers):
        return Refusal(403, "role", f"acting on this case needs one of the roles {', '.join(approvers)}")
    if verdict == "approve" and any(a.person == person for a in approvals):
        return Refusal(409, "actor", f"{person} has already approved this case; one person counts once")
    return None


def escalate(approvers: Sequence[str], escalation: Sequence[str]) -> tuple[list[str], list[str]] | None:
    """The approvers and remaining chain one level up, or None at the end of the chain (the case expires)."""
    if not escalation:
        return None
    return [escalation[0]], list(escalation[1:])
