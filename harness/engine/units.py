"""Work units: the smallest piece of a sweep that runs, fails and is stored alone."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from harness.engine.params import canonical_json

UNIT_ID_LENGTH = 20


def unit_id_for(task: str, params: dict[str, Any]) -> str:
    """Stable id of a unit: a hash of the canonical JSON of its task and params.

    sha256 over sorted-key JSON does not depend on Python's hash seed, the
    process, the machine or the order the params were written in.
    """
    text = canonical_json({"task": task, "params": params})
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:UNIT_ID_LENGTH]


@dataclass(frozen=True)
class WorkUnit:
    """One task run with fully resolved params (defaults filled in)."""

    sweep: str
    task: str
    params: dict[str, Any] = field(hash=False)
    unit_id: str = ""

    def __post_init__(self) -> None:
        if not self.unit_id:
            object.__setattr__(self, "unit_id", unit_id_for(self.task, self.params))

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, cheap to send to a worker actor."""
        return {"sweep": self.sweep, "task": self.task, "params": self.params,
                "unit_id": self.unit_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "WorkUnit":
        return cls(sweep=d["sweep"], task=d["task"], params=d["params"], unit_id=d["unit_id"])
