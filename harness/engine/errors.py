"""The engine's exceptions, in a module of their own so every engine module can raise them
without importing the module that catches them."""

from __future__ import annotations


class SpecError(ValueError):
    """A sweep that cannot run. `errors` lists every problem found, each with its field."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid sweep:\n" + "\n".join(f"  - {e}" for e in errors))


class ExecutorError(RuntimeError):
    """The executor itself cannot go on (e.g. every worker dies at start)."""
