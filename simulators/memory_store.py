"""A synchronous in-memory stock ledger for simulation runs, one per run, indexed by integers for speed.

Semantics follow DESIGN.md section 3: per (sku, location) `sellable`, `reserved`, `damaged`,
`return_pending`, `in_transit`; `available = sellable - reserved`; a reservation is all-or-nothing with
duplicate lines summed before the check and never makes `reserved > sellable`; commit takes the units out
of `sellable` and `reserved`; release gives them back to `available`. It also keeps the running totals the
conservation check needs. It is not the service's `StockStore` (which is async and durable): the simulator
replays hundreds of thousands of orders per run and calls it inline.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec


class Totals(msgspec.Struct):
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


ReservationLine = tuple[int, int, int]  # (sku index, location index, qty)


class MemoryStock:
    """Stock of `n_skus` x `n_locations` positions; every method takes integer indexes."""

    def __init__(self, starting: Sequence[Sequence[int]]) -> None:
        self.sellable: list[list[int]] = [list(row) for row in starting]
        n_locations = len(starting[0]) if starting else 0
        self.reserved: list[list[int]] = [[0] * n_locations for _ in starting]
        self.damaged: list[list[int]] = [[0] * n_locations for _ in starting]
        self.return_pending: list[list[int]] = [[0] * n_locations for _ in starting]
        self.in_transit: list[list[int]] = [[0] * n_locations for _ in starting]
        self.totals = Totals(start=sum(sum(row) for row in starting))
        self._reservations: dict[int, tuple[ReservationLine, ...]] = {}
        self._next_id = 1

    def available(self, sku: int, location: int) -> int:
        return self.sellable[sku][location] - self.reserved[sku][location]

    def reserve(self, lines: Sequence[ReservationLine]) -> int | None:
        """All-or-nothing: a reservation id, or None (and nothing changed) if any line lacks stock."""
        summed: dict[tuple[int, int], int] = {}
        for sku, location, qty in lines:
            if qty <= 0:
                raise ValueError(f"reservation quantity must be above 0, got {qty}")
            summed[(sku, location)] = summed.get((sku, location), 0) + qty
        sellable = self.sellable
        reserved = self.reserved
        for (sku, location), qty in summed.items():
            if sellable[sku][location] - reserved[sku][location] < qty:
                return None
        for (sku, location), qty in summed.items():
            reserved[sku][location] += qty
        reservation_id = self._next_id
        self._next_id += 1
        self._reservations[reservation_id] = tuple((s, loc, q) for (s, loc), q in summed.items())
        return reservation_id

    def commit(self, reservation_id: int) -> tuple[ReservationLine, ...]:
        """Fulfil a reservation: the units leave the location as sold."""
        lines = self._reservations.pop(reservation_id)
        for sku, location, qty in lines:
            self.reserved[sku][location] -= qty
            self.sellable[sku][location] -= qty
            self.totals.sold += qty
        return lines

    def release(self, reservation_id: int) -> tuple[ReservationLine, ...]:
        lines = self._reservations.pop(reservation_id)
        for sku, location, qty in lines:
            self.reserved[sku][location] -= qty
        return lines

    def open_reservations(self) -> int:
        return len(self._reservations)

    def sale(self, sku: int, location: int, qty: int) -> None:
        """A till sale: recorded even when it takes sellable below zero (a negative-inventory exception)."""
        before = self.sellable[sku][location]
        self.sellable[sku][location] = before - qty
        self.totals.sold += qty
        if before - qty < 0:
            self.totals.negative_sales += min(qty, qty - before)

    def receipt(self, sku: int, location: int, qty: int) -> None:
        self.sellable[sku][location] += qty
        self.totals.receipts += qty

    def return_in(self, sku: int, location: int, qty: int) -> None:
        self.return_pending[sku][location] += qty
        self.totals.returns_received += qty

    def return_disposition(self, sku: int, location: int, qty: int, restock: bool) -> None:
        self.return_pending[sku][location] -= qty
        if restock:
            self.sellable[sku][location] += qty
            self.totals.returns_restocked += qty
        else:
            self.damaged[sku][location] += qty
            self.totals.returns_damaged += qty

    def damage(self, sku: int, location: int, qty: int) -> None:
        self.sellable[sku][location] -= qty
        self.damaged[sku][location] += qty
        self.totals.damaged += qty

    def transfer_out(self, sku: int, source: int, destination: int, qty: int) -> None:
        """Units leave `source` now and are in transit to `destination` until `transfer_in`."""
        self.sellable[sku][source] -= qty
        self.in_transit[sku][destination] += qty
        self.totals.transferred_out += qty

    def transfer_in(self, sku: int, destination: int, qty: int) -> None:
        self.in_transit[sku][destination] -= qty
        self.sellable[sku][destination] += qty
        self.totals.transferred_in += qty

    def sellable_total(self) -> int:
        return sum(sum(row) for row in self.sellable)

    def in_transit_total(self) -> int:
        return sum(sum(row) for row in self.in_transit)

    def conservation(self) -> dict[str, int | bool]:
        """start + receipts + returns restocked = end + sold + damaged + in transit."""
        t = self.totals
        end = self.sellable_total()
        in_transit = self.in_transit_total()
        left = t.start + t.receipts + t.returns_restocked
        right = end + t.sold + t.damaged + in_transit
        return {
            "start": t.start,
            "receipts": t.receipts,
            "returns_restocked": t.returns_restocked,
            "end": end,
            "sold": t.sold,
            "damaged": t.damaged,
            "in_transit": in_transit,
            "holds": left == right,
        }
