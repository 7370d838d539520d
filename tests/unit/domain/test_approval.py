"""Approval routing for transfers and markdowns: the requester never approves their own request."""

from __future__ import annotations

import pytest

from service.domain.approval import Requester, apply_approval
from service.domain.errors import PolicyError
from service.domain.transfer import TRANSFER_CHAIN

ASSOCIATE = Requester("u1", "store_associate")
MANAGER = Requester("u2", "store_manager")


def test_an_approval_needs_no_approvers() -> None:
    decision = apply_approval({"outcome": "approve", "reason": "small"}, ASSOCIATE, TRANSFER_CHAIN)
    assert (decision.outcome, decision.approvers) == ("approve", ())


def test_a_route_keeps_the_rulesets_approvers_when_the_requester_is_not_one() -> None:
    result = {"outcome": "route", "approvers": ["store_manager"], "sla_hours": 24}
    decision = apply_approval(result, ASSOCIATE, TRANSFER_CHAIN)
    assert (decision.approvers, decision.sla_hours, decision.substitutions) == (("store_manager",), 24, ())


def test_the_requester_is_replaced_by_the_next_level_of_the_rulesets_chain() -> None:
    result = {
        "outcome": "route",
        "approvers": ["store_manager"],
        "escalation": ["store_manager", "regional_manager", "operations_director"],
    }
    decision = apply_approval(result, MANAGER, TRANSFER_CHAIN)
    assert decision.approvers == ("regional_manager",)
    assert decision.substitutions[0].replaced == "store_manager"
    assert decision.substitutions[0].by == "regional_manager"


def test_without_a_ruleset_chain_the_default_chain_gives_the_next_level() -> None:
    decision = apply_approval({"outcome": "route", "approvers": ["store_manager"]}, MANAGER, TRANSFER_CHAIN)
    assert decision.approvers == ("district_manager",)


def test_the_replacement_skips_a_level_already_approving() -> None:
    result = {"outcome": "route", "approvers": ["store_manager", "district_manager"]}
    decision = apply_approval(result, MANAGER, TRANSFER_CHAIN)
    assert decision.approvers == ("regional_manager", "district_manager")


def test_the_requester_is_removed_from_the_escalation_chain() -> None:
    result = {
        "outcome": "route",
        "approvers": ["regional_manager"],
        "escalation": ["store_manager", "regional_manager"],
    }
    decision = apply_approval(result, MANAGER, TRANSFER_CHAIN)
    assert decision.escalation == ("regional_manager",)


def test_a_request_nobody_above_the_requester_can_approve_is_rejected() -> None:
    top = Requester("u9", "operations_director")
    decision = apply_approval({"outcome": "route", "approvers": ["operations_director"]}, top, TRANSFER_CHAIN)
    assert decision.outcome == "reject"


def test_an_unknown_outcome_is_refused() -> None:
    with pytest.raises(PolicyError):
        apply_approval({"outcome": "maybe"}, ASSOCIATE, TRANSFER_CHAIN)
