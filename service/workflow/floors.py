"""The source floor re-check of approved transfers, on live stock. Checks handed over while one batch is
read go together in the next: one master-data snapshot and decision context, and one read of live stock
for all their SKUs, at the latest of their times (they are all answered now)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from service.decisions.approvals import transfer_floor
from service.decisions.context import DecisionContext, DecisionServices, context_from
from service.masterdata import MasterDataCache
from service.workflow.batches import Batches
from service.workflow.rounds import SYSTEM_ACTOR

MAX_CHECKS = 100  # per read of live stock; more wait for the next one


class FloorServices(DecisionServices, Protocol):
    @property
    def master_data(self) -> MasterDataCache: ...


@dataclass(frozen=True, slots=True)
class FloorCheck:
    sku: str
    source: str
    qty: int
    now: datetime


@dataclass(eq=False)
class Floors:
    services: FloorServices
    _batches: Batches[FloorCheck, dict[str, Any] | None] = field(init=False)

    def __post_init__(self) -> None:
        self._batches = Batches(self._check_all, MAX_CHECKS)

    async def breach(self, sku: str, source: str, qty: int, now: datetime) -> dict[str, Any] | None:
        """Why moving `qty` of `sku` away from `source` now breaches its floor (None: it does not)."""
        return await self._batches.submit(FloorCheck(sku, source, qty, now))

    async def _check_all(self, checks: list[FloorCheck]) -> list[dict[str, Any] | None]:
        now = max(check.now for check in checks)
        ctx = context_from(self.services, SYSTEM_ACTOR, now, await self.services.master_data.get(now))
        md = ctx.master_data
        known = list(dict.fromkeys(check.sku for check in checks if check.sku in md.items))
        stock = await self.services.stock.get_available(known) if known else {}
        return [_breach(ctx, check, stock.get(check.sku, {}).get(check.source, 0)) for check in checks]


def _breach(ctx: DecisionContext, check: FloorCheck, available: int) -> dict[str, Any] | None:
    sku, source, qty = check.sku, check.source, check.qty
    item = ctx.master_data.items.get(sku)
    location = ctx.master_data.locations.get(source)
    if item is None or location is None:
        return {"reason": f"{'sku ' + sku if item is None else 'location ' + source} is no longer known"}
    floor = transfer_floor(ctx, item, location)
    if available - qty >= floor:
        return None
    return {
        "reason": f"moving {qty} would leave {available - qty} available at {source}, below its floor {floor}",
        "available": available,
        "floor": floor,
        "qty": qty,
    }
