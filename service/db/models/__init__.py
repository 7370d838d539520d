"""Every SQL model, imported here so that `Base.metadata` knows all tables."""

from service.db.models.foundation import ApiKey, AuditEntry, Item, Location, Promotion
from service.db.models.rulesets import RulesetGenerationRow, RulesetKindRow, RulesetRow, RulesetVersionRow

__all__ = [
    "ApiKey",
    "AuditEntry",
    "Item",
    "Location",
    "Promotion",
    "RulesetGenerationRow",
    "RulesetKindRow",
    "RulesetRow",
    "RulesetVersionRow",
]
