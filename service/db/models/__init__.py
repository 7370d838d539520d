"""Every SQL model, imported here so that `Base.metadata` knows all tables."""

from service.db.models.foundation import ApiKey, AuditEntry, Item, Location, Promotion

__all__ = ["ApiKey", "AuditEntry", "Item", "Location", "Promotion"]
