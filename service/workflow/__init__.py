"""The workflow behind routed decisions: approval cases, exceptions, and events to other systems."""
