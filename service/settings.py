"""Settings read from the environment, one object per concern, behind a cached `get_settings()`."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

StockBackendName = Literal["sql", "redis", "memory"]
EngineName = Literal["durable", "python"]
N = TypeVar("N", int, float)

VAR_DIR = Path(os.environ.get("RETAIL_POLICY_VAR", "var"))


class SettingsError(ValueError):
    """An environment variable holds a value the service cannot use."""


def _default_database_url() -> str:
    return f"sqlite+aiosqlite:///{VAR_DIR / 'retail-policy.db'}"


def _choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise SettingsError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
    return value


def _number(
    name: str, default: N, parse: Callable[[str], N], kind: str, accept: Callable[[N], bool], bound: str
) -> N:
    """The setting `name` read with `parse` (`default` when unset or empty), refused naming what it should
    be: `kind` when it does not parse, `bound` when `accept` says no."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = parse(raw)
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r}: expected {kind}") from exc
    if not accept(value):
        raise SettingsError(f"{name}={raw!r}: expected {bound}")
    return value


def _positive_int(name: str, default: int) -> int:
    return _number(name, default, int, "a whole number", lambda v: v > 0, "a number above 0")


def _whole_number(name: str, default: int) -> int:
    """A setting of 0 or more (0 usually meaning "off")."""
    return _number(name, default, int, "a whole number", lambda v: v >= 0, "0 or more")


def _positive_seconds(name: str, default: float) -> float:
    """A duration in seconds above 0; fractions allowed (`0.5`)."""
    return _number(
        name, default, float, "a number of seconds", lambda v: 0 < v < float("inf"), "a number above 0"
    )


def _time_zone(name: str, default: str) -> str:
    raw = os.environ.get(name) or default
    try:
        ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SettingsError(f"{name}={raw!r}: expected an IANA time zone such as Europe/London") from exc
    return raw


@dataclass(frozen=True)
class DatabaseSettings:
    url: str
    pool_size: int = 10
    echo: bool = False
    # PostgreSQL day partitions of the decision log and the journal (service/db/partitions.py): days made
    # ahead of today, the decision log's days kept (0 keeps every day), how often the service checks; the
    # stock journal's days kept (0: every day; older days are folded into its checkpoint, also on SQLite)
    partitions_ahead_days: int = 7
    decision_log_retention_days: int = 0
    partition_check_seconds: float = 3600.0
    journal_retention_days: int = 0

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class StockSettings:
    backend: StockBackendName
    redis_url: str | None
    redis_pool_size: int = 64
    sweep_interval_seconds: float = 1.0
    default_ttl_seconds: int = 900
    # the calendar whose days locations' daily capacities count in (an IANA time zone name)
    capacity_timezone: str = "UTC"


@dataclass(frozen=True)
class RulesSettings:
    engine: EngineName = "durable"
    rulesets_dir: Path = Path("rulesets")
    reload_interval_seconds: float = 1.0
    # a worker that cannot confirm its rulesets against the store for this long refuses decisions (503)
    switch_deadline_seconds: float = 10.0
    # how often a worker writes its heartbeat for the fleet view at the latest
    heartbeat_seconds: float = 5.0


@dataclass(frozen=True)
class ServerSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    workers: int = 1
    max_body_bytes: int = 1_048_576
    demo_data: bool = False
    # freeze start-up's objects out of the collector's reach while serving (service/app.py); the tests
    # turn it off for apps whose subject is not the process (a full collection per app start)
    tune_collector: bool = True


@dataclass(frozen=True)
class WorkflowSettings:
    """Webhook delivery and the exception checks (docs/approvals.md)."""

    # the dispatcher and the periodic exception check run in every service process
    background: bool = True
    webhook_max_attempts: int = 8  # a delivery is dead-lettered after this many failed attempts
    webhook_base_delay_seconds: float = 5.0  # the wait after the first failure, doubling per attempt
    webhook_max_delay_seconds: float = 3600.0
    webhook_timeout_seconds: float = 10.0
    webhook_poll_seconds: float = 2.0  # how often the dispatcher looks for new events and due deliveries
    webhook_retention_days: int = 30  # delivered outbox events older than this are deleted; 0 keeps them
    exception_check_seconds: float = 60.0
    # the channels whose floors the oversell check reads for a promotion that names none
    oversell_channels: tuple[str, ...] = ("ecommerce", "store")


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings
    stock: StockSettings
    rules: RulesSettings = field(default_factory=RulesSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    workflow: WorkflowSettings = field(default_factory=WorkflowSettings)


def load_settings() -> Settings:
    """Read every setting from the environment; raise `SettingsError` naming a bad variable."""
    env = os.environ
    redis_url = env.get("REDIS_URL") or None
    cluster_nodes = env.get("REDIS_CLUSTER_URLS") or None
    if cluster_nodes:
        # host:port[,host:port...] (a node's redis:// prefix may be kept): a Redis Cluster
        if redis_url:
            raise SettingsError("REDIS_URL and REDIS_CLUSTER_URLS: set one of them, not both")
        nodes = [
            n.strip().removeprefix("redis://").rstrip("/") for n in cluster_nodes.split(",") if n.strip()
        ]
        redis_url = "redis+cluster://" + ",".join(nodes)
    backend = env.get("STOCK_BACKEND") or ("redis" if redis_url else "sql")
    _choice("STOCK_BACKEND", backend, ("sql", "redis", "memory"))
    if backend == "redis" and not redis_url:
        raise SettingsError(
            "STOCK_BACKEND=redis needs REDIS_URL (for example redis://127.0.0.1:6379/0) or REDIS_CLUSTER_URLS"
        )
    engine = _choice("RULES_ENGINE", env.get("RULES_ENGINE", "durable"), ("durable", "python"))
    deadline = _positive_int("RULES_SWITCH_DEADLINE_SECONDS", 10)
    if deadline < 2:  # workers poll once a second: a shorter deadline would refuse between two polls
        raise SettingsError(f"RULES_SWITCH_DEADLINE_SECONDS={deadline}: expected at least 2 (seconds)")
    return Settings(
        database=DatabaseSettings(
            url=env.get("DATABASE_URL") or _default_database_url(),
            pool_size=_positive_int("DATABASE_POOL_SIZE", 10),
            partitions_ahead_days=_positive_int("PARTITIONS_AHEAD_DAYS", 7),
            decision_log_retention_days=_whole_number("DECISION_LOG_RETENTION_DAYS", 0),
            partition_check_seconds=_positive_int("PARTITION_CHECK_SECONDS", 3600),
            journal_retention_days=_whole_number("JOURNAL_RETENTION_DAYS", 0),
        ),
        stock=StockSettings(
            backend=backend,  # type: ignore[arg-type]
            redis_url=redis_url,
            redis_pool_size=_positive_int("REDIS_POOL_SIZE", 64),
            default_ttl_seconds=_positive_int("RESERVATION_DEFAULT_TTL_SECONDS", 900),
            capacity_timezone=_time_zone("CAPACITY_TIMEZONE", "UTC"),
        ),
        rules=RulesSettings(
            engine=engine,  # type: ignore[arg-type]
            rulesets_dir=Path(env.get("RULESETS_DIR", "rulesets")),
            switch_deadline_seconds=deadline,
            heartbeat_seconds=_positive_int("RULES_HEARTBEAT_SECONDS", 5),
        ),
        server=ServerSettings(
            host=env.get("HOST", "127.0.0.1"),
            port=_positive_int("PORT", 8000),
            workers=_positive_int("WORKERS", 1),
            max_body_bytes=_positive_int("MAX_BODY_BYTES", 1_048_576),
            demo_data=env.get("DEMO_DATA", "") in ("1", "true", "yes"),
        ),
        workflow=WorkflowSettings(
            background=env.get("WORKFLOW_BACKGROUND", "1") not in ("0", "false", "no"),
            webhook_max_attempts=_positive_int("WEBHOOK_MAX_ATTEMPTS", 8),
            webhook_base_delay_seconds=_positive_int("WEBHOOK_BASE_DELAY_SECONDS", 5),
            webhook_max_delay_seconds=_positive_int("WEBHOOK_MAX_DELAY_SECONDS", 3600),
            webhook_timeout_seconds=_positive_int("WEBHOOK_TIMEOUT_SECONDS", 10),
            webhook_poll_seconds=_positive_seconds("WEBHOOK_POLL_SECONDS", 2.0),
            webhook_retention_days=_whole_number("WEBHOOK_RETENTION_DAYS", 30),
            exception_check_seconds=_positive_int("EXCEPTION_CHECK_SECONDS", 60),
            oversell_channels=tuple(
                c.strip() for c in env.get("OVERSELL_CHANNELS", "ecommerce,store").split(",") if c.strip()
            ),
        ),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
