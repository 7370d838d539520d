"""Every SQL model, imported here so that `Base.metadata` knows all tables."""

from service.db.models.approvals import ApprovalCaseRole, ChangeRequest, ItemPrice
from service.db.models.console import ConsoleSessionRow
from service.db.models.decisions import DecisionEntry, DecisionTrace
from service.db.models.events import (
    Delivery,
    ExceptionRecord,
    ExpectedReceipt,
    OutboxDispatch,
    OutboxMark,
    Subscription,
)
from service.db.models.foundation import ApiKey, AuditEntry, Item, Location, Promotion
from service.db.models.rulesets import RulesetGenerationRow, RulesetKindRow, RulesetRow, RulesetVersionRow
from service.db.models.simulations import SimulationRow
from service.db.models.stock import (
    ReservationRecord,
    StockCheckpoint,
    StockCheckpointItem,
    StockEventRecord,
    StockExceptionRecord,
    StockJournalEntry,
    StockLevel,
)
from service.db.models.workflow import ApprovalCase, ApprovalStep, OutboxEvent

__all__ = [
    "ApiKey",
    "ApprovalCase",
    "ApprovalCaseRole",
    "ApprovalStep",
    "AuditEntry",
    "ChangeRequest",
    "ConsoleSessionRow",
    "DecisionEntry",
    "DecisionTrace",
    "Delivery",
    "ExceptionRecord",
    "ExpectedReceipt",
    "Item",
    "ItemPrice",
    "Location",
    "OutboxDispatch",
    "OutboxEvent",
    "OutboxMark",
    "Promotion",
    "ReservationRecord",
    "RulesetGenerationRow",
    "RulesetKindRow",
    "RulesetRow",
    "RulesetVersionRow",
    "SimulationRow",
    "StockCheckpoint",
    "StockCheckpointItem",
    "StockEventRecord",
    "StockExceptionRecord",
    "StockJournalEntry",
    "StockLevel",
    "Subscription",
]
