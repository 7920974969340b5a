"""Errors the local host raises on purpose. Each message starts with ``devhost:``."""
from __future__ import annotations


class DevhostError(Exception):
    """Base of devhost's own errors (the CLI prints the message and exits non-zero)."""


class ConfigurationError(DevhostError):
    """A setting, host.json or local.settings.json is missing or invalid."""


class IndexingError(DevhostError):
    """The function app could not be indexed (the real host would not load it either)."""


class UnsupportedBindingError(IndexingError):
    """A function uses a trigger or binding that devhost does not run. `binding` names it."""

    def __init__(self, function_name: str, binding: str, direction: str | None = None) -> None:
        self.function_name = function_name
        self.binding = binding
        self.direction = direction
        suffix = f" ({direction})" if direction else ""
        super().__init__(
            f"devhost: function '{function_name}' uses binding '{binding}'{suffix}, which the "
            "local host does not support; use func start"
        )
