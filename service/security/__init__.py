"""API keys with roles, and the guards that check them."""

from service.security.guards import check_access, principal_of, requires
from service.security.keys import ROLES, Principal, create_key

__all__ = ["ROLES", "Principal", "check_access", "create_key", "principal_of", "requires"]
