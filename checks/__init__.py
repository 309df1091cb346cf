"""Checks of the project itself that make runs (not shipped, not imported by the service)."""
