"""The long-lived objects one worker process holds, created at start-up and closed at shutdown."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.masterdata import MasterDataCache
from service.security.guards import PrincipalCache
from service.settings import Settings


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    master_data: MasterDataCache
    stock: Any = None
    rules: Any = None
    decision_log: Any = None
    simulations: Any = None
    dispatcher: Any = None  # service.workflow.dispatcher.Dispatcher
    monitor: Any = None  # service.workflow.monitor.ExceptionMonitor
    workflow: Any = None  # service.workflow.cases.Workflow
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    principals: PrincipalCache = field(default_factory=PrincipalCache)
