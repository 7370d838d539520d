"""Availability decision: what a channel may sell per SKU, from the availability ruleset evaluated per
location (once per distinct facts for a ruleset version and master data snapshot), live stock and active
promotions."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import msgspec

from service.decisions.common import finish, known_item, stock_call
from service.decisions.context import DecisionContext, TraceLevel
from service.decisions.core import availability_facts
from service.decisions.ids import new_decision_id
from service.decisions.record import DecisionRecord, KeptTrace
from service.decisions.schemas import AvailabilityRequest
from service.domain.allocation import haversine_km
from service.domain.availability import LocationPolicy, PreparedPolicies, sellable_units, sku_availability
from service.domain.errors import InvalidInput
from service.masterdata import ItemRecord, LocationRecord, MasterData
from service.rules.language.problems import RuleEvaluationError
from service.stock.store import AvailableView

log = logging.getLogger(__name__)


@dataclass
class _Table:
    """Location id -> the availability ruleset's policy for one kind of item, with what is derived from it
    (made when first asked for, kept with the table)."""

    policies: dict[str, LocationPolicy]
    prepared: PreparedPolicies | None = None
    # location types -> the low-stock threshold at every location of one of them
    thresholds: dict[frozenset[str], dict[str, int]] = field(default_factory=dict)


@dataclass
class _Shared:
    """Policies already computed for one (ruleset version, master data snapshot, channel): both are
    immutable, so their answers are reused by later requests (kept with the snapshot, see `_shared`)."""

    ruleset: Any
    policies: dict[tuple[Any, ...], tuple[LocationPolicy, Any, dict[str, Any]]] = field(default_factory=dict)
    tables: dict[tuple[Any, ...], _Table] = field(default_factory=dict)
    # a request's SKUs -> their prepared policies (trace none, no promotions: then nothing else varies)
    requests: dict[tuple[str, ...], list[PreparedPolicies]] = field(default_factory=dict)
    # (sku, location types) -> the SKU's low-stock thresholds there (trace none, no promotions)
    sku_thresholds: dict[tuple[str, frozenset[str]], dict[str, int]] = field(default_factory=dict)
    # a request's SKUs -> its `rules` trace (no promotions: then it depends on nothing else), its evaluations
    # encoded once: the answer writes these bytes as they are, the decision log the trace's JSON and digest
    # made with it
    traces: dict[tuple[str, ...], KeptTrace] = field(default_factory=dict)


# (ruleset version, channel) pairs whose answers a snapshot keeps before it drops the oldest: a few channels
# x the active version and its shadow (the channel is request input, so the count is bounded)
SHARED_KEPT = 16


def _shared(ruleset: Any, md: MasterData, channel: str) -> _Shared:
    """The answers shared by every request on this snapshot for this ruleset version and channel, kept with
    the snapshot; a version is identified by its content hash, anything else by the ruleset itself."""
    sha = getattr(ruleset, "sha256", None)
    key = ((ruleset.name, ruleset.version, sha) if sha else ruleset, channel)
    kept: dict[Any, _Shared] = md.derived(_Shared, dict)
    found = kept.get(key)
    if found is None:
        if len(kept) >= SHARED_KEPT:
            del kept[next(iter(kept))]
        found = kept[key] = _Shared(ruleset)
    return found


@dataclass
class ChannelPolicies:
    """The availability ruleset's answer per (sku, location) for one channel, evaluated once per distinct
    set of facts for a ruleset version and master data snapshot (the answers are shared across requests;
    the trace still lists every distinct evaluation the request used)."""

    ctx: DecisionContext
    channel: str
    trace: TraceLevel
    ruleset: Any = None
    _cache: dict[tuple[Any, ...], LocationPolicy] = field(default_factory=dict)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    evaluated: Any = None
    _tables: dict[tuple[Any, ...], _Table] = field(default_factory=dict)
    _shared: _Shared = field(init=False)

    def __post_init__(self) -> None:
        # the active availability ruleset, unless a version is given (the shadow of the active one)
        if self.ruleset is None:
            self.ruleset = self.ctx.active("availability")
        self._shared = _shared(self.ruleset, self.ctx.master_data, self.channel)

    def table(self, item: ItemRecord) -> dict[str, LocationPolicy]:
        """Location id -> policy for one item; shared by items alike in category and price when no
        promotion covers them (then nothing else in their facts differs)."""
        return self._table(item).policies

    def _table(self, item: ItemRecord) -> _Table:
        md = self.ctx.master_data
        promoted = bool(md.promotions) and any(p.applies(item.sku) for p in md.promotions)
        key: tuple[Any, ...] = (item.sku,) if promoted else (item.category, item.price)
        found = self._tables.get(key)
        if found is not None:
            return found
        shared = self._shared
        # a promoted item's table depends on the time; the full trace lists its evaluations as made
        reuse = not promoted and self.trace != "full"
        if reuse:
            found = shared.tables.get(key)
            if found is not None and self.evaluated is None and shared.policies:
                self.evaluated = next(iter(shared.policies.values()))[1]
        if found is None:
            found = _Table({loc.id: self.policy(item, loc) for loc in md.locations.values()})
            if reuse:
                shared.tables[key] = found
        self._tables[key] = found
        return found

    def prepared(self, item: ItemRecord) -> PreparedPolicies:
        """The item's table made ready for summing, kept with the (shared) table it was made from."""
        table = self._table(item)
        if table.prepared is None:
            table.prepared = PreparedPolicies.of(table.policies)
        return table.prepared

    def prepared_all(self, skus: Sequence[str]) -> list[PreparedPolicies]:
        """`prepared` of every SKU in `skus` (all known to master data); an untraced request without
        promotions reuses the list an earlier request with the same SKUs built."""
        md = self.ctx.master_data
        if self.trace == "full" or md.promotions:
            return [self.prepared(md.items[sku]) for sku in skus]
        key = tuple(skus)
        shared = self._shared
        found = shared.requests.get(key)
        if found is None:
            found = [self.prepared(md.items[sku]) for sku in skus]
            if len(shared.requests) > 4096:
                shared.requests.clear()
            shared.requests[key] = found
        elif self.evaluated is None and shared.policies:
            # what `table` records when it reuses a shared table
            self.evaluated = next(iter(shared.policies.values()))[1]
        return found

    def low_stock_thresholds(self, item: ItemRecord, types: frozenset[str]) -> dict[str, int]:
        """Location id -> the item's low-stock threshold at every location of one of `types` (what the
        allocator needs), kept with the shared table it was read from; without promotions an untraced
        request finds them by SKU (its table is then the same for every request)."""
        untraced = self.trace == "none" and not self.ctx.master_data.promotions
        if untraced:
            found = self._shared.sku_thresholds.get((item.sku, types))
            if found is not None:
                return found
        table = self._table(item)
        thresholds = table.thresholds.get(types)
        if thresholds is None:
            policies = table.policies
            thresholds = table.thresholds[types] = {
                loc.id: policies[loc.id].low_stock_threshold
                for loc in self.ctx.master_data.locations.values()
                if loc.type in types
            }
        if untraced:
            by_sku = self._shared.sku_thresholds
            if len(by_sku) > 4096:
                by_sku.clear()
            by_sku[(item.sku, types)] = thresholds
        return thresholds

    def facts(self, item: ItemRecord, location: LocationRecord, promo: bool) -> dict[str, Any]:
        return availability_facts(
            self.channel, item.category, item.price, location.type, location.region, promo
        )

    def _key(self, item: ItemRecord, location: LocationRecord) -> tuple[Any, ...]:
        """What the policy of `item` at `location` depends on."""
        md = self.ctx.master_data
        promo = bool(md.promotions) and bool(
            md.active_promotions(item.sku, self.ctx.now, location.id, self.channel)
        )
        return (item.category, item.price, location.type, location.region, promo)

    def _evaluated(
        self, item: ItemRecord, location: LocationRecord, key: tuple[Any, ...]
    ) -> tuple[LocationPolicy, Any, dict[str, Any]]:
        """(policy, evaluation, facts) for `key`, shared: evaluated once per snapshot with the `rules` trace
        (a few microseconds, once), so that a request at that level reuses it like an untraced one."""
        level = "full" if self.trace == "full" else "rules"
        shared = self._shared.policies
        found = shared.get((*key, level))
        if found is None:
            facts = self.facts(item, location, key[-1])
            evaluated = self.ruleset.evaluate(facts, level)
            found = (LocationPolicy.from_result(evaluated.evaluation.result), evaluated, facts)
            shared[(*key, level)] = found
        return found

    def policy(self, item: ItemRecord, location: LocationRecord) -> LocationPolicy:
        key = self._key(item, location)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        policy, evaluated, facts = self._evaluated(item, location, key)
        self.evaluated = evaluated
        self._cache[key] = policy
        if self.trace == "full":
            self.evaluations.append({"facts": facts, "rules": evaluated.evaluation.trace})
        return policy

    def rules_trace(self, skus: Sequence[str]) -> dict[str, Any]:
        """The `rules` trace of a request for `skus`: every distinct evaluation their policies came from, in
        the order first used, read from the shared answers after the decision (nothing is evaluated or
        copied per request for it beyond these few entries). Without promotions the list depends on the
        SKUs alone: the trace is kept with the shared answers (read only), its list encoded as JSON once,
        and requests for the same SKUs answer (and log) the same bytes."""
        md = self.ctx.master_data
        if md.promotions or self.trace != "rules":
            return {"evaluations": self._rules_trace(skus)}
        key = tuple(skus)
        kept = self._shared.traces
        found = kept.get(key)
        if found is None:
            found = KeptTrace({"evaluations": msgspec.Raw(msgspec.json.encode(self._rules_trace(skus)))})
            if len(kept) > 4096:
                kept.clear()
            kept[key] = found
        return found

    def _rules_trace(self, skus: Sequence[str]) -> list[dict[str, Any]]:
        md = self.ctx.master_data
        seen: set[tuple[Any, ...]] = set()
        out: list[dict[str, Any]] = []
        kinds: set[tuple[Any, ...]] = set()
        for sku in skus:
            item = md.items[sku]
            if not md.promotions:  # then items alike in category and price have the same evaluations
                if (item.category, item.price) in kinds:
                    continue
                kinds.add((item.category, item.price))
            for location in md.locations.values():
                key = self._key(item, location)
                if key not in seen:
                    seen.add(key)
                    _, evaluated, facts = self._evaluated(item, location, key)
                    out.append({"facts": facts, "rules": evaluated.evaluation.trace})
        return out

    def ruleset_ref(self) -> dict[str, Any]:
        if self.evaluated is not None:
            ref: dict[str, Any] = self.evaluated.ruleset_ref()
            return ref
        probe = self.ruleset.evaluate({}, "none")
        ref = probe.ruleset_ref()
        return ref


def promotion_cap(ctx: DecisionContext, sku: str, channel: str) -> int | None:
    if not ctx.master_data.promotions:
        return None
    caps = [
        p.per_order_cap
        for p in ctx.master_data.active_promotions(sku, ctx.now, channel=channel)
        if p.per_order_cap is not None
    ]
    return min(caps) if caps else None


def _shadow(
    ctx: DecisionContext,
    request: AvailabilityRequest,
    policies: ChannelPolicies,
    available: dict[str, dict[str, int]],
    answered: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """What the shadow version of the availability ruleset (if one runs) would let the channel sell of
    each SKU on the same stock, and where that differs from the answer; never acted on, and a shadow that
    fails is reported, not raised."""
    version = getattr(policies.ruleset, "shadow_version", None)
    if version is None:
        return None
    out: dict[str, Any] = {
        "ruleset": {"name": version.name, "version": version.version, "sha256": version.sha256},
        "result": None,
        "matched": None,
        "differences": {},
        "error": None,
    }
    try:
        shadow = ChannelPolicies(ctx, request.channel, "none", ruleset=version)
        md = ctx.master_data
        for row in answered:
            sku = row["sku"]
            result = sellable_units(sku, available.get(sku, {}), shadow.prepared(md.items[sku]))
            cap = promotion_cap(ctx, sku, request.channel)
            sellable = result.sellable if cap is None else min(cap, result.sellable)
            if sellable != row["sellable"]:
                out["differences"][f"sellable.{sku}"] = {"active": row["sellable"], "shadow": sellable}
    except RuleEvaluationError as exc:  # the shadow is observed, never trusted: its failure is data
        out["differences"] = {}
        out["error"] = f"{type(exc).__name__}: {exc}"  # names the shadow ruleset's rule, for its author
    except Exception as exc:
        log.exception("the shadow availability ruleset failed")
        out["differences"] = {}
        out["error"] = f"{type(exc).__name__} (logged)"  # the message may name internals: the log has it
    return out


# the stock of a SKU the store holds none of (read only)
_NO_STOCK: Mapping[str, int] = MappingProxyType({})
# prepared policies whose totals a stock view keeps (a few channels x the active version and its shadow)
TOTALS_KEPT = 16


def _totals(prepared: PreparedPolicies, stock: Mapping[str, int]) -> tuple[int, int | None]:
    """`prepared.totals(stock)`; kept with `stock` when it is a view a store hands to every read of the same
    answer (both are immutable, so an unchanged stock answer costs a lookup), keyed by the prepared
    policies' identity (the shared tables keep them alive; the entry holds them too)."""
    if type(stock) is not AvailableView:
        return prepared.totals(stock)
    kept = stock.derived
    found = kept.get(id(prepared))
    if found is not None and found[0] is prepared:
        return found[1]  # type: ignore[no-any-return]
    totals = prepared.totals(stock)
    if len(kept) >= TOTALS_KEPT:
        kept.clear()
    kept[id(prepared)] = (prepared, totals)
    return totals


def _refuse_skus(md: MasterData, skus: Sequence[str]) -> None:
    """422 naming the first SKU of `skus` listed twice or unknown to master data."""
    seen: set[str] = set()
    for i, sku in enumerate(skus):
        if sku in seen:
            raise InvalidInput(f"skus[{i}]", f"{sku!r} is listed twice")
        known_item(md, sku, f"skus[{i}]")
        seen.add(sku)


async def decide_availability(
    ctx: DecisionContext, request: AvailabilityRequest, trace: TraceLevel = "rules"
) -> DecisionRecord:
    decision_id = new_decision_id()
    md = ctx.master_data
    items = md.items
    wanted = set(request.skus)
    if len(wanted) != len(request.skus) or not items.keys() >= wanted:
        _refuse_skus(md, request.skus)
    policies = ChannelPolicies(ctx, request.channel, trace)
    available = await stock_call(ctx.stock.get_available(request.skus))
    stock_ms = ctx.elapsed_ms()
    skus: list[dict[str, Any]] = []
    prepared = None if trace == "full" else policies.prepared_all(request.skus)
    for i, sku in enumerate(request.skus):
        out: dict[str, Any]
        # stock at a location master data does not know is never sold: the policies cover every known one
        if trace == "full":
            table = policies.table(items[sku])
            rows = [(loc, units) for loc, units in sorted(available.get(sku, {}).items()) if loc in table]
            result = sku_availability(sku, rows, table, detail=True)
            out = result.to_dict(with_locations=True)
            uncapped, sellable = result.uncapped, result.sellable
        else:
            # the rows SkuAvailability.to_dict(with_locations=False) gives, without the object
            assert prepared is not None
            uncapped, cap = _totals(prepared[i], available.get(sku, _NO_STOCK))
            if cap is None:
                sellable = uncapped
                out = {"sku": sku, "sellable": sellable}
            else:
                sellable = min(uncapped, cap)
                out = {"sku": sku, "sellable": sellable, "per_order_cap": cap, "uncapped": uncapped}
        promo_cap = promotion_cap(ctx, sku, request.channel)
        if promo_cap is not None and promo_cap < sellable:
            out["sellable"] = promo_cap
            out["per_order_cap"] = promo_cap
            out["uncapped"] = uncapped
        if trace == "full" and request.destination is not None:
            for row in out["locations"]:
                loc = md.locations[row["location"]]
                row["distance_km"] = round(
                    haversine_km(loc.lat, loc.lon, request.destination.lat, request.destination.lon), 3
                )
        skus.append(out)
    decision = {"channel": request.channel, "skus": skus}
    trace_out: dict[str, Any] | None = None
    if trace != "none":
        if trace == "full":
            trace_out = {"evaluations": policies.evaluations}
        else:
            trace_out = policies.rules_trace(request.skus)
    shadow = _shadow(ctx, request, policies, available, skus)
    return await finish(
        ctx,
        decision_id=decision_id,
        kind="availability",
        request=request,
        decision=decision,
        evaluated=policies,
        trace=trace_out,
        shadow=shadow,
        timings={"stock_ms": stock_ms},
        subject=request.channel,
    )
