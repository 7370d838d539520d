"""Settings come from the environment and refuse values the service cannot use, naming the variable."""

from __future__ import annotations

import pytest

from service.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DATABASE_URL", "REDIS_URL", "STOCK_BACKEND", "RULES_ENGINE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.database.url.startswith("sqlite+aiosqlite:///")
    assert settings.stock.backend == "sql" and settings.stock.redis_url is None
    assert settings.rules.engine == "durable"


def test_redis_url_selects_the_redis_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STOCK_BACKEND", raising=False)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    assert load_settings().stock.backend == "redis"


def test_stock_backend_forces_a_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("STOCK_BACKEND", "sql")
    assert load_settings().stock.backend == "sql"


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("STOCK_BACKEND", "mongo", "STOCK_BACKEND='mongo': expected one of sql, redis, memory"),
        ("RULES_ENGINE", "drools", "RULES_ENGINE='drools': expected one of durable, python"),
        ("PORT", "eighty", "PORT='eighty': expected a whole number"),
        ("WORKERS", "0", "WORKERS='0': expected a number above 0"),
        ("CAPACITY_TIMEZONE", "Mars/Olympus", "CAPACITY_TIMEZONE='Mars/Olympus': expected an IANA time zone"),
        ("CAPACITY_TIMEZONE", "../etc", "CAPACITY_TIMEZONE='../etc': expected an IANA time zone"),
        ("WEBHOOK_POLL_SECONDS", "soon", "WEBHOOK_POLL_SECONDS='soon': expected a number of seconds"),
        ("WEBHOOK_POLL_SECONDS", "0", "WEBHOOK_POLL_SECONDS='0': expected a number above 0"),
        ("WEBHOOK_POLL_SECONDS", "nan", "WEBHOOK_POLL_SECONDS='nan': expected a number above 0"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings()


def test_redis_backend_without_url_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("STOCK_BACKEND", "redis")
    with pytest.raises(SettingsError, match="needs REDIS_URL"):
        load_settings()


def test_capacity_days_follow_the_configured_calendar(monkeypatch: pytest.MonkeyPatch) -> None:
    from datetime import UTC, datetime
    from zoneinfo import ZoneInfo

    from service.decisions.context import DecisionContext

    assert load_settings().stock.capacity_timezone == "UTC"
    monkeypatch.setenv("CAPACITY_TIMEZONE", "Pacific/Auckland")
    zone = ZoneInfo(load_settings().stock.capacity_timezone)
    late = datetime(2026, 11, 22, 23, 30, tzinfo=UTC)
    ctx = DecisionContext(None, None, None, None, late, capacity_zone=zone)  # type: ignore[arg-type]
    # 23:30 UTC is already the next morning in Auckland
    assert ctx.capacity_day == "2026-11-23"
    assert DecisionContext(None, None, None, None, late).capacity_day == "2026-11-22"  # type: ignore[arg-type]


def test_cluster_nodes_select_the_redis_backend_on_a_cluster(monkeypatch: pytest.MonkeyPatch) -> None:
    from service.stock.cluster import cluster_nodes

    monkeypatch.delenv("STOCK_BACKEND", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("REDIS_CLUSTER_URLS", "redis://10.0.0.1:7000, 10.0.0.2:7001")
    stock = load_settings().stock
    assert stock.backend == "redis"
    assert stock.redis_url == "redis+cluster://10.0.0.1:7000,10.0.0.2:7001"
    assert cluster_nodes(stock.redis_url) == ([("10.0.0.1", 7000), ("10.0.0.2", 7001)], None, None)
    with pytest.raises(ValueError, match="host:port"):
        cluster_nodes("redis+cluster://10.0.0.1")
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:6379/0")
    with pytest.raises(SettingsError, match="REDIS_URL and REDIS_CLUSTER_URLS"):
        load_settings()


def test_webhook_timing_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().workflow
    assert defaults.webhook_poll_seconds == 2.0
    monkeypatch.setenv("WEBHOOK_POLL_SECONDS", "0.25")
    assert load_settings().workflow.webhook_poll_seconds == 0.25
