"""Task registry: tasks/ modules register what they measure; the harness finds them here.

The harness never imports a task module by name: `load_tasks()` imports every
module of the `tasks` package once, and each registers itself with
`register_task`. Other installed packages add tasks through the entry-point group
`harness.tasks` (see `load_entry_points`); workers call `load_tasks` too, so those
tasks also run on Ray.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import pkgutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

import pyarrow as pa

from harness.engine.params import Param
from harness.engine.columns import COMMON_FIELDS

if TYPE_CHECKING:
    from harness.engine.context import UnitContext
    from harness.engine.units import WorkUnit

Rows = list[dict[str, Any]]

#: Entry-point group of tasks from other packages.
ENTRY_POINT_GROUP = "harness.tasks"
log = logging.getLogger(__name__)



def expand_axis(combo: dict[str, Any], name: str, sentinel: Any,
                values: Iterable[Any] | Callable[[], Iterable[Any]]) -> list[dict[str, Any]]:
    """One combo per value of param `name` when it holds `sentinel` (e.g. -1 or "all": every
    chunk, batch, block, frequency, kind), else the combo itself. `values` may be a callable,
    evaluated only when the sentinel is set (some counts need a model or a checkpoint)."""
    if combo[name] != sentinel:
        return [combo]
    return [dict(combo, **{name: v}) for v in (values() if callable(values) else values)]

@dataclass(frozen=True)
class Task:
    """What to measure.

    run: computes the unit's rows (dicts with exactly the output columns).
    expand: optional; maps one resolved param combination to the param dicts
        of its units (e.g. a landscape grid split into chunks). Default: one unit.
    check: optional cross-field validation of one combination -> error messages.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    output_schema: pa.Schema
    run: Callable[["WorkUnit", "UnitContext"], Rows]
    expand: Callable[[dict[str, Any]], Iterable[dict[str, Any]]] | None = None
    check: Callable[[dict[str, Any]], list[str]] | None = None

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name}: duplicate param names")
        clash = set(self.output_schema.names) & (set(names) | {f.name for f in COMMON_FIELDS})
        if clash:
            raise ValueError(f"task {self.name}: output columns {sorted(clash)} clash with "
                             "params or common columns")

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def identity(self, params: dict[str, Any]) -> dict[str, Any]:
        """The params a unit id hashes: all of them, except a param marked `added` (in a later
        version) while it holds its default, so adding a param to a task re-keys no stored
        unit. To recompute units on purpose: `harness run SWEEP --rerun TASK`."""
        later = {p.name: p.default for p in self.params if p.added is not None}
        return {k: v for k, v in params.items() if k not in later or v != later[k]}


_TASKS: dict[str, Task] = {}
_loaded = False


def register_task(task: Task) -> Task:
    """Add a task; re-registering the same name replaces it (module reloads)."""
    _TASKS[task.name] = task
    return task


def load_tasks() -> dict[str, Task]:
    """Import every module of the `tasks` package once and return the registry."""
    global _loaded
    if not _loaded:
        import tasks as package

        for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
            if not info.name.startswith("_"):
                importlib.import_module(f"{package.__name__}.{info.name}")
        load_entry_points()
        _loaded = True
    return _TASKS


def load_entry_points() -> None:
    """Load the `harness.tasks` entry points of installed packages.

    An entry point names a module that registers its tasks on import (`mine = mypkg.tasks`),
    or a Task, or a list of Tasks (`mine = mypkg.tasks:TASKS`). One that fails to load is
    logged and skipped: a broken plugin does not stop sweeps of other tasks (a sweep naming
    its task then fails validation with "unknown task").
    """
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP),
                     key=lambda e: e.name):
        try:
            value = ep.load()
        except Exception as exc:  # noqa: BLE001 - any import error of a plugin is reported
            log.warning("task entry point %s = %s (group %s) failed to load: %s: %s",
                        ep.name, ep.value, ENTRY_POINT_GROUP, type(exc).__name__, exc)
            continue
        for task in [value] if isinstance(value, Task) else (
                value if isinstance(value, (list, tuple)) else []):
            if isinstance(task, Task):
                register_task(task)


def get_task(name: str) -> Task:
    tasks = load_tasks()
    if name not in tasks:
        raise KeyError(f"unknown task {name!r}; allowed: {', '.join(sorted(tasks))}")
    return tasks[name]


def task_names() -> list[str]:
    return sorted(load_tasks())
