"""The long-lived objects one worker process holds, created at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.db.sqlite_writer import SqliteWriters
from service.decisions.log import SqlDecisionLog
from service.masterdata import MasterDataCache
from service.rules.registry import RulesRegistry
from service.rules.trial import TrialWorker
from service.security.guards import PrincipalCache
from service.settings import Settings
from service.stock.store import StockStore
from service.workflow.cases import Workflow
from service.workflow.dispatcher import Dispatcher
from service.workflow.monitor import ExceptionMonitor
from simulators.jobs import SimulationJobs


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    master_data: MasterDataCache
    stock: StockStore
    rules: RulesRegistry
    # the child process that checks ruleset versions and runs dry runs
    trials: TrialWorker
    decision_log: SqlDecisionLog
    simulations: SimulationJobs
    monitor: ExceptionMonitor
    # one writer per SQLite file, shared by the decision log, a Redis store's journal and the workflow
    sqlite_writers: SqliteWriters
    # built on these services, so set right after them (`service.app.start_services`)
    workflow: Workflow = field(init=False)
    # the webhook deliveries; None when the settings turn background work off
    dispatcher: Dispatcher | None = None
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    principals: PrincipalCache = field(default_factory=PrincipalCache)
