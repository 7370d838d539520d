"""Ruleset texts for the lifecycle tests: one small transfer ruleset whose versions differ by a marker."""

from __future__ import annotations

NAME = "transfer-approval"


def transfer_yaml(
    marker: str = "v1", *, name: str = NAME, passing: bool = True, limit: int = 500, divide: bool = False
) -> str:
    """A valid transfer ruleset; `marker` lands in the result's reason so a response shows its version.

    With `passing=False` its embedded test expects the wrong outcome, so it stores but cannot publish.
    With `divide=True` the approving rule computes an SLA from the transfer value, failing on value 0.
    """
    expected = "approve" if passing else "reject"
    sla = ', sla_hours: "= round(24 / transfer.value)"' if divide else ""
    return f"""\
ruleset: {name}
kind: transfer
description: Approve small transfers ({marker}).
hit_policy: first
facts:
  transfer.value: float
  source.open_promotions: int
rules:
  - id: auto-approve-small
    priority: 50
    when:
      all: [transfer.value <= {limit}, source.open_promotions == 0]
    then: {{outcome: approve, reason: {marker}{sla}}}
  - id: promo-at-source
    priority: 40
    when: source.open_promotions > 0
    then: {{outcome: route, approvers: [regional_manager], sla_hours: 4, reason: {marker}}}
default: {{outcome: route, approvers: [store_manager], sla_hours: 24, reason: {marker}}}
tests:
  - name: a small transfer is approved
    given: {{transfer: {{value: 120.0}}, source: {{open_promotions: 0}}}}
    expect: {{outcome: {expected}}}
"""


SMALL_TRANSFER = {"transfer": {"value": 120.0}, "source": {"open_promotions": 0}}
PROMO_TRANSFER = {"transfer": {"value": 120.0}, "source": {"open_promotions": 2}}

BROKEN_YAML = "ruleset: transfer-approval\nkind: transfer\nrules: [\n"
ZERO_TRANSFER = {"transfer": {"value": 0.0}, "source": {"open_promotions": 0}}
