"""The stock of a simulation run: a fresh `MemoryStockStore` of its own, driven through the store's
synchronous core (`service.stock.memory.StockCore`) on integer slots, and the units that crossed the
network's edges, which the conservation check needs. It is the run's stock view: the decisions read its
rows, and an allocation acts on it through `reserve`, which holds through the core (as the store's own
`reserve` does) and counts the units against the day's capacity.

The SKUs and locations are given their slots in the run's order first, so a run's SKU and location indexes
are the core's slots, and `available[sku][location]` is the core's own row, read by the allocator as is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec

from service.domain.allocation import UNLIMITED
from service.stock.memory import MemoryStockStore, SlotLine


class Flows(msgspec.Struct):
    """Units that crossed the ledger's edges since the start, for the conservation check."""

    start: int = 0
    receipts: int = 0
    returns_received: int = 0
    returns_restocked: int = 0
    returns_damaged: int = 0
    sold: int = 0
    damaged: int = 0
    transferred_out: int = 0
    transferred_in: int = 0
    negative_sales: int = 0


class RunStock:
    """`n_skus` x `n_locations` positions of an isolated store; every method takes slot indexes."""

    def __init__(
        self,
        skus: Sequence[str],
        locations: Sequence[str],
        starting: Sequence[Sequence[int]],
        daily_capacity: Sequence[int | None] | None = None,
    ) -> None:
        """`daily_capacity[location]`: units it may dispatch per day (None: no limit; omitted: none has one)."""
        self.store = MemoryStockStore()
        core = self.core = self.store.core
        for i, sku in enumerate(skus):
            if core.sku_slot(sku) != i:
                raise ValueError(f"SKU {sku!r} is listed twice")
        for i, location in enumerate(locations):
            if core.location_slot(location) != i:
                raise ValueError(f"location {location!r} is listed twice")
        for s, row in enumerate(starting):
            for loc, qty in enumerate(row):
                if qty:
                    core.add(s, loc, sellable=qty)
        self.sellable = core.sellable
        self.reserved = core.reserved
        self.damaged = core.damaged
        self.return_pending = core.return_pending
        self.in_transit = core.in_transit
        self.available = core.available
        self.flows = Flows(start=core.total("sellable"))
        # the units each location may still dispatch today, as the store's capacity counters would give it
        self.daily_capacity = [
            UNLIMITED if cap is None else cap for cap in (daily_capacity or [None] * len(locations))
        ]
        self.capacity = list(self.daily_capacity)
        self.open_reservations = 0
        # called with (sku, location) after every change of `available` there (see `watch`)
        self._changed: Callable[[tuple[int, int]], None] | None = None
        # when set: gets `sku * len(locations) + location` of every change of any bucket of a position
        # (sellable, reserved, in_transit, return_pending), for the incremental reorder review
        self.touched: set[int] | None = None
        self._width = len(locations)

    def watch(self, changed: Callable[[tuple[int, int]], None]) -> None:
        """Call `changed((sku, location))` after every change of `available[sku][location]`."""
        self._changed = changed

    def _moved(self, sku: int, location: int) -> None:
        if self._changed is not None:
            self._changed((sku, location))
        if self.touched is not None:
            self.touched.add(sku * self._width + location)

    def _touch(self, sku: int, location: int) -> None:
        """A bucket of the position changed without a change of `available`."""
        if self.touched is not None:
            self.touched.add(sku * self._width + location)

    def reserve(self, lines: Sequence[SlotLine]) -> bool:
        """All-or-nothing hold of (sku, location, qty) lines, through the store core's `try_hold`; False (and
        nothing held) if any lacks stock. The units count against the locations' capacity for the day."""
        if self.core.try_hold(lines):
            self.open_reservations += 1
            changed = self._changed
            capacity = self.capacity
            touched = self.touched
            width = self._width
            for sku, location, qty in lines:
                capacity[location] -= qty
                if changed is not None:
                    changed((sku, location))
                if touched is not None:
                    touched.add(sku * width + location)
            return True
        return False

    def new_day(self) -> None:
        """A new business day: every location's daily capacity is whole again."""
        self.capacity[:] = self.daily_capacity

    def commit(self, lines: Sequence[SlotLine]) -> None:
        """Fulfil a held reservation: the units leave their locations as sold."""
        self.core.commit(lines)
        self.open_reservations -= 1
        touched = self.touched
        width = self._width
        for sku, location, qty in lines:
            self.flows.sold += qty
            if touched is not None:
                touched.add(sku * width + location)

    def release(self, lines: Sequence[SlotLine]) -> None:
        self.core.hold(lines, -1)
        self.open_reservations -= 1
        for sku, location, _ in lines:
            self._moved(sku, location)

    def sale(self, sku: int, location: int, qty: int) -> None:
        """A till sale: recorded even when it takes sellable below zero (a negative-inventory exception)."""
        before = self.sellable[sku][location]
        self.core.add(sku, location, sellable=-qty)
        self._moved(sku, location)
        self.flows.sold += qty
        if before - qty < 0:
            self.flows.negative_sales += min(qty, qty - before)

    def receipt(self, sku: int, location: int, qty: int) -> None:
        """Units arriving from outside the network (a purchase order, a supplier delivery)."""
        self.core.add(sku, location, sellable=qty)
        self._moved(sku, location)
        self.flows.receipts += qty

    def return_in(self, sku: int, location: int, qty: int) -> None:
        self.core.add(sku, location, return_pending=qty)
        self._touch(sku, location)
        self.flows.returns_received += qty

    def return_disposition(self, sku: int, location: int, qty: int, restock: bool) -> None:
        if restock:
            self.core.add(sku, location, sellable=qty, return_pending=-qty)
            self._moved(sku, location)
            self.flows.returns_restocked += qty
        else:
            self.core.add(sku, location, damaged=qty, return_pending=-qty)
            self._touch(sku, location)
            self.flows.returns_damaged += qty

    def damage(self, sku: int, location: int, qty: int) -> None:
        self.core.add(sku, location, sellable=-qty, damaged=qty)
        self._moved(sku, location)
        self.flows.damaged += qty

    def transfer_out(self, sku: int, source: int, destination: int, qty: int) -> None:
        """Units leave `source` now and are in transit to `destination` until `transfer_in`."""
        self.core.add(sku, source, sellable=-qty)
        self._moved(sku, source)
        self.core.add(sku, destination, in_transit=qty)
        self._touch(sku, destination)
        self.flows.transferred_out += qty

    def transfer_in(self, sku: int, destination: int, qty: int) -> None:
        self.core.add(sku, destination, sellable=qty, in_transit=-qty)
        self._moved(sku, destination)
        self.flows.transferred_in += qty

    def conservation(self) -> dict[str, int | bool]:
        """start + receipts + returns restocked = end + sold + damaged + in transit."""
        f = self.flows
        end = self.core.total("sellable")
        in_transit = self.core.total("in_transit")
        left = f.start + f.receipts + f.returns_restocked
        right = end + f.sold + f.damaged + in_transit
        return {
            "start": f.start,
            "receipts": f.receipts,
            "returns_restocked": f.returns_restocked,
            "end": end,
            "sold": f.sold,
            "damaged": f.damaged,
            "in_transit": in_transit,
            "holds": left == right,
        }
