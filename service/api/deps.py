"""Dependencies every controller can ask for by name."""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from litestar.di import Provide

from service.services import Services


def provide_services(state: State) -> Services:
    services: Services = state["services"]  # by key: by attribute the state fails a lookup first
    return services


def dependencies() -> dict[str, Any]:
    return {"services": Provide(provide_services, sync_to_thread=False)}
