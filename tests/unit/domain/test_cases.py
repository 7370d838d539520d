"""The rules of an approval case: how approvals add up, who may act, where a case escalates."""

from __future__ import annotations

import pytest

from service.domain.approval import Requester, apply_approval
from service.domain.cases import Approval, acting_role, chain_above, escalate, refusal, satisfied
from service.domain.errors import PolicyError
from service.domain.transfer import TRANSFER_CHAIN

ROUTE = {"outcome": "route", "approvers": ["store_manager", "district_manager"], "sla_hours": 8}
ASSOCIATE = Requester("u1", "store_associate")


def holds(*roles: str):  # type: ignore[no-untyped-def]
    return lambda role: role in roles


def test_any_of_counts_distinct_people_holding_an_approver_role() -> None:
    approvers = ["store_manager", "district_manager"]
    one = [Approval("ana", "store_manager")]
    assert satisfied("any", approvers, 1, one)
    assert not satisfied("any", approvers, 2, one)
    assert not satisfied("any", approvers, 2, [*one, Approval("ana", "district_manager")])  # one person once
    assert satisfied("any", approvers, 2, [*one, Approval("dan", "store_manager")])


def test_all_of_needs_one_approval_per_role() -> None:
    approvers = ["store_manager", "district_manager"]
    assert not satisfied(
        "all", approvers, 2, [Approval("ana", "store_manager"), Approval("bea", "store_manager")]
    )
    assert satisfied(
        "all", approvers, 2, [Approval("ana", "store_manager"), Approval("dan", "district_manager")]
    )


def test_after_an_escalation_only_approvals_under_the_new_level_count() -> None:
    assert not satisfied("any", ["district_manager"], 1, [Approval("ana", "store_manager")])


def test_under_all_of_a_person_holding_two_roles_acts_under_the_one_still_missing() -> None:
    approvers = ["store_manager", "district_manager"]
    given = [Approval("ana", "store_manager")]
    assert (
        acting_role("all", approvers, given, holds("store_manager", "district_manager")) == "district_manager"
    )
    assert acting_role("any", approvers, given, holds("district_manager")) == "district_manager"
    assert acting_role("any", approvers, given, holds("planner")) is None


def test_refusals_name_why() -> None:
    approvers = ["store_manager"]
    case = ("pending", approvers, [Approval("ana", "store_manager")])
    assert refusal("bea", {"sam"}, "approved", approvers, [], holds("store_manager"), "approve").status == 409
    assert refusal("sam", {"sam"}, *case, holds("store_manager"), "approve").field == "actor"
    assert refusal("dan", {"sam"}, *case, holds("district_manager"), "approve").field == "role"
    again = refusal("ana", {"sam"}, *case, holds("store_manager"), "approve")
    assert again is not None and (again.status, again.field) == (409, "actor")
    assert refusal("bea", {"sam"}, *case, holds("store_manager"), "approve") is None


def test_the_chain_above_starts_past_the_highest_approver_and_skips_the_requester() -> None:
    chain = ("store_manager", "district_manager", "regional_manager")
    assert chain_above(["store_manager"], chain, TRANSFER_CHAIN, "store_associate") == chain[1:]
    assert chain_above(["finance"], ["cfo"], TRANSFER_CHAIN, "x") == ("cfo",)
    default = chain_above(["store_manager"], [], TRANSFER_CHAIN, "district_manager")
    assert default == ("regional_manager", "operations_director")


def test_escalation_climbs_one_level_and_ends_with_the_chain() -> None:
    assert escalate(["store_manager"], ["district_manager", "regional_manager"]) == (
        ["district_manager"],
        ["regional_manager"],
    )
    assert escalate(["regional_manager"], []) is None


def test_a_route_says_how_approvals_add_up() -> None:
    assert apply_approval(ROUTE, ASSOCIATE, TRANSFER_CHAIN).approvals_required == 1
    both = apply_approval({**ROUTE, "approval": "all"}, ASSOCIATE, TRANSFER_CHAIN)
    assert (both.approval, both.approvals_required) == ("all", 2)
    two = apply_approval({**ROUTE, "approvals_required": 2}, ASSOCIATE, TRANSFER_CHAIN)
    assert (two.approval, two.to_dict()["approvals_required"]) == ("any", 2)


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"approval": "most"}, "approval"),
        ({"approvals_required": 0}, "approvals_required"),
        ({"approval": "all", "approvals_required": 2}, "approvals_required"),
    ],
)
def test_an_unusable_approval_rule_is_a_policy_error(extra: dict[str, object], key: str) -> None:
    with pytest.raises(PolicyError) as raised:
        apply_approval({**ROUTE, **extra}, ASSOCIATE, TRANSFER_CHAIN)
    assert raised.value.key == key
