"""An item's price in effect at a time: the latest change effective by then, else the listed price."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from service.masterdata import ItemRecord, MasterData

T0 = datetime(2026, 12, 3, tzinfo=UTC)
TEE = ItemRecord("TEE-001", "apparel", 20.0, 8.0, 6, None, 5, None)


def test_a_price_change_holds_from_its_effective_time_on() -> None:
    changes = {"TEE-001": ((T0, 15.0), (T0 + timedelta(days=7), 12.0)), "GONE": ((T0, 1.0),)}
    data = MasterData({}, {"TEE-001": TEE}, (), changes)
    assert data.priced_at(T0 - timedelta(seconds=1)).items["TEE-001"].price == 20.0
    assert data.priced_at(T0).items["TEE-001"].price == 15.0
    assert data.priced_at(T0 + timedelta(days=8)).items["TEE-001"].price == 12.0
    assert "GONE" not in data.priced_at(T0).items
    assert data.items["TEE-001"].price == 20.0  # the snapshot itself keeps the listed price


def test_without_price_changes_the_snapshot_is_its_own_view() -> None:
    data = MasterData({}, {"TEE-001": TEE}, ())
    assert data.priced_at(T0) is data
