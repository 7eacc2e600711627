"""Sweep files: YAML plus `key.sub=value` overrides, validated, expanded into work units.

A sweep file looks like::

    name: demo                     # results go to <results>/demo/
    description: free text
    defaults:                      # merged into every task that declares the param
      dataset: digits
    executor: {workers: 2}         # optional; command-line flags win
    tasks:
      evaluate:                    # a task name → its params (or a list of such blocks)
        model: [resnet18, vit_ti]  # a list is a sweep axis: cartesian product
        seed: [0, 1]

Everything is checked before anything runs; every problem is reported at once
with the field's path and what is allowed.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Sequence
from typing import Any

import yaml

from harness.engine.errors import SpecError
from harness.engine.params import Param, ParamError, is_sweep_axis
from harness.engine.registry import Task, load_tasks
from harness.engine.run_config import TASK_KEYS
from harness.engine.units import WorkUnit, unit_id_for

TOP_LEVEL_KEYS = ("name", "description", "defaults", "executor", "tasks")
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

EXECUTOR_PARAMS: tuple[Param, ...] = (
    Param("kind", str, "ray", "where units run", choices=("local", "ray")),
    Param("workers", int, 0, "worker actors (0: one per CPU, or per GPU when GPUs exist)", min=0),
    Param("num_gpus", float, 0.0, "GPUs per worker; fractions share a GPU", min=0.0),
    Param("num_cpus", float, 1.0, "CPUs per worker (also its torch threads)", min=0.0,
          min_exclusive=True),
    Param("max_retries", int, 2, "re-runs of a unit whose worker died", min=0),
    Param("max_inflight", int, 2, "unit batches queued per worker (see max_batch)", min=1),
    Param("retry_failures", int, 0, "re-runs of a unit that raised or timed out", min=0),
    Param("unit_timeout", float, 0.0, "seconds a unit may run before it is stopped (0: no limit)",
          min=0.0),
    Param("max_batch", int, 64, "most units per actor call (short units are batched)", min=1),
    Param("start_timeout", float, 600.0, "seconds the Ray pool waits for its first worker to "
          "start before it stops with what it asked for and what the cluster has", min=0.0,
          min_exclusive=True),
    Param("device", str, "auto", "torch device for the local executor",
          choices=("auto", "cpu", "cuda")),
    Param("max_workers", int, 64, "with workers 0: most worker actors at once, and what is "
          "asked of the cluster's autoscaler (0: ask nothing)", min=0),
)


class SweepLoader(yaml.SafeLoader):
    """PyYAML's safe loader, plus the float forms YAML 1.2 adds (`1e-4`, `1E5`, `.5e3`).

    PyYAML follows YAML 1.1, which reads an exponent without a dot and a sign (`1e-4`) as a
    string; every researcher writes learning rates that way. Safe: it builds only plain types.
    """


SweepLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+.0123456789"))


def load_yaml(text: str) -> Any:
    """Parse sweep YAML (a file or an override's value) with `SweepLoader`."""
    return yaml.load(text, Loader=SweepLoader)  # noqa: S506 - SweepLoader is a SafeLoader


@dataclass
class Spec:
    """A validated sweep: the resolved document and its param combinations per task."""

    name: str
    description: str
    document: dict[str, Any]
    executor: dict[str, Any]
    combos: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def units(self) -> list[WorkUnit]:
        """All work units, in spec order, without duplicates."""
        tasks = load_tasks()
        seen: set[str] = set()
        out: list[WorkUnit] = []
        for task_name, combos in self.combos.items():
            task = tasks[task_name]
            for combo in combos:
                for params in (task.expand(combo) if task.expand else [combo]):
                    unit = WorkUnit(self.name, task_name, dict(params),
                                    unit_id_for(task_name, task.identity(params)))
                    if unit.unit_id not in seen:
                        seen.add(unit.unit_id)
                        out.append(unit)
        return out


# -- reading -------------------------------------------------------------------

def shipped_sweeps_dir() -> Path:
    """The sweep files that come with the package: harness/sweeps, a link to the checkout's
    sweeps/ that an installed wheel holds as files (pyproject.toml's package data)."""
    import harness

    return (Path(harness.__file__).resolve().parent / "sweeps").resolve()  # the link's target


def resolve_sweep_path(sweep: str, search_dirs: list[Path] | None = None) -> Path:
    """A sweep given as a file path, or as a name looked up in sweeps/."""
    path = Path(sweep)
    if path.is_file():
        return path
    dirs = search_dirs or [Path.cwd() / "sweeps", shipped_sweeps_dir()]
    for d in dirs:
        for candidate in (d / sweep, d / f"{sweep}.yaml", d / f"{sweep}.yml"):
            if candidate.is_file():
                return candidate
    raise SpecError([f"sweep {sweep!r}: no such file (looked for it as a path and in "
                     f"{', '.join(str(d) for d in dirs)})"])


def load_spec(sweep: str, overrides: list[str] | None = None,
              results_root: str = "results") -> Spec:
    """Read, override and validate a sweep file; raises SpecError on any problem.

    `results_root` is where `checkpoint: sweep:<name>` references are looked up.
    """
    path = resolve_sweep_path(sweep)
    try:
        document = load_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError([f"{path}: not valid YAML: {exc}"]) from None
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise SpecError([f"{path}: the top level must be a mapping with keys "
                         f"{', '.join(TOP_LEVEL_KEYS)}"])
    document = apply_overrides(document, overrides or [])
    from harness.engine.checkpoint_refs import resolve_checkpoint_refs

    return validate(resolve_checkpoint_refs(document, results_root))


def apply_overrides(document: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set `a.b.c=value` paths (value parsed as YAML; numeric parts index lists)."""
    doc = copy.deepcopy(document)
    errors = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            errors.append(f"override {item!r}: expected key.sub=value, e.g. tasks.evaluate.seed=[0,1]")
            continue
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            errors.append(f"override {item!r}: value is not valid YAML: {exc}")
            continue
        try:
            _set_path(doc, key.split("."), value)
        except (KeyError, IndexError, TypeError) as exc:
            errors.append(f"override {item!r}: {exc}")
    if errors:
        raise SpecError(errors)
    return doc


def _set_path(node: Any, parts: list[str], value: Any) -> None:
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise IndexError(f"{where}: index out of range (list has {len(node)} items)")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, {})
        else:
            raise TypeError(f"{where}: cannot set a key inside a {type(node).__name__}")


# -- validation ----------------------------------------------------------------

def validate(document: dict[str, Any]) -> Spec:
    """Check the whole document, collect every error, and resolve param combinations."""
    errors: list[str] = []
    tasks = load_tasks()

    for key in document:
        if key not in TOP_LEVEL_KEYS:
            errors.append(f"{key}: unknown key; allowed: {', '.join(TOP_LEVEL_KEYS)}")

    name = document.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        errors.append(f"name: expected a sweep name of letters, digits, '_', '.', '-' "
                      f"(it names the results folder), got {name!r}")
    description = document.get("description", "")
    if not isinstance(description, str):
        errors.append("description: expected a string")

    raw_tasks = document.get("tasks")
    executor = _validate_executor(document.get("executor", {}), errors,
                                  list(raw_tasks) if isinstance(raw_tasks, dict) else [])

    defaults = document.get("defaults", {}) or {}
    if not isinstance(defaults, dict):
        errors.append("defaults: expected a mapping of param name to value")
        defaults = {}

    combos: dict[str, list[dict[str, Any]]] = {}
    if not isinstance(raw_tasks, dict) or not raw_tasks:
        errors.append(f"tasks: expected a mapping of task name to params; "
                      f"available tasks: {', '.join(sorted(tasks))}")
        raw_tasks = {}
    used_defaults: set[str] = set()
    for task_name, blocks in raw_tasks.items():
        if task_name not in tasks:
            errors.append(f"tasks.{task_name}: unknown task; allowed: {', '.join(sorted(tasks))}")
            continue
        task = tasks[task_name]
        used_defaults |= set(defaults) & set(task.param_names)
        block_list = blocks if isinstance(blocks, list) else [blocks]
        for i, block in enumerate(block_list):
            where = f"tasks.{task_name}" + (f".{i}" if isinstance(blocks, list) else "")
            if block is None:
                block = {}
            if not isinstance(block, dict):
                errors.append(f"{where}: expected a mapping of param name to value(s)")
                continue
            merged = {k: v for k, v in defaults.items() if k in task.param_names}
            merged.update(block)
            combos.setdefault(task_name, []).extend(_resolve_block(task, merged, where, errors))
    for key in sorted(set(defaults) - used_defaults):
        if raw_tasks and all(t in tasks for t in raw_tasks):
            errors.append(f"defaults.{key}: no task of this sweep has this param; tasks: "
                          f"{', '.join(raw_tasks)}")

    if errors:
        raise SpecError(errors)
    return Spec(name=name, description=description, document=document, executor=executor,
                combos=combos)


def _validate_executor(raw: Any, errors: list[str], sweep_tasks: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {p.name: p.default for p in EXECUTOR_PARAMS}
    out["tasks"] = {}
    if not isinstance(raw, dict):
        errors.append("executor: expected a mapping")
        return out
    if "tasks" in raw:
        out["tasks"] = _validate_task_resources(raw["tasks"], errors, sweep_tasks)
    allowed = ", ".join(p.name for p in EXECUTOR_PARAMS)
    out.update(coerce_options(
        {k: v for k, v in raw.items() if k != "tasks"}, EXECUTOR_PARAMS, errors,
        label=lambda key: f"executor.{key}",
        unknown=lambda key: f"executor.{key}: unknown key; allowed: {allowed}, tasks"))
    return out


def coerce_options(values: dict[str, Any], params: Sequence[Param], errors: list[str], *,
                   label: Callable[[str], str], unknown: Callable[[str], str]) -> dict[str, Any]:
    """Each value coerced by the param of its key (the executor block, its per-task entries,
    `harness.run`'s options); an unknown key or a refused value appends a message to `errors`
    (`unknown(key)`, or `label(key): <why>`) and is left out."""
    by_name = {p.name: p for p in params}
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key not in by_name:
            errors.append(unknown(key))
            continue
        try:
            out[key] = by_name[key].coerce(value)
        except ParamError as exc:
            errors.append(f"{label(key)}: {exc}")
    return out


def _validate_task_resources(raw: Any, errors: list[str],
                             sweep_tasks: list[str]) -> dict[str, dict[str, float]]:
    """`executor.tasks`: task name -> its own num_cpus / num_gpus / unit_timeout."""
    if not isinstance(raw, dict):
        errors.append(f"executor.tasks: expected a mapping of task name to {{{', '.join(TASK_KEYS)}}}"
                      ", e.g. {train: {num_gpus: 1}}")
        return {}
    per_task = [p for p in EXECUTOR_PARAMS if p.name in TASK_KEYS]
    out: dict[str, dict[str, float]] = {}
    for task, values in raw.items():
        where = f"executor.tasks.{task}"
        if task not in sweep_tasks:
            errors.append(f"{where}: this sweep has no task {task!r}; its tasks: "
                          f"{', '.join(sweep_tasks)}")
            continue
        if not isinstance(values, dict):
            errors.append(f"{where}: expected a mapping with keys among {', '.join(TASK_KEYS)}")
            continue
        out[task] = coerce_options(
            values, per_task, errors, label=lambda key, where=where: f"{where}.{key}",
            unknown=lambda key, where=where: (f"{where}.{key}: not settable per task; allowed: "
                                              f"{', '.join(TASK_KEYS)}"))
    return out


def _resolve_block(task: Task, block: dict[str, Any], where: str,
                   errors: list[str]) -> list[dict[str, Any]]:
    """Coerce every value of one block and expand its axes as a cartesian product."""
    n_errors = len(errors)
    axes: list[tuple[str, list[Any]]] = []
    for key in block:
        if key not in task.param_names:
            errors.append(f"{where}.{key}: unknown param of task {task.name}; allowed: "
                          f"{', '.join(task.param_names)}")
    for param in task.params:
        if param.name not in block:
            if param.required:
                errors.append(f"{where}.{param.name}: required param missing ({param.describe()})")
            else:
                axes.append((param.name, [param.default]))
            continue
        value = block[param.name]
        values = value if is_sweep_axis(param, value) else [value]
        if not values:
            errors.append(f"{where}.{param.name}: empty list, nothing to sweep over")
            continue
        coerced = []
        for j, v in enumerate(values):
            label = f"{where}.{param.name}" + (f"[{j}]" if values is value else "")
            try:
                coerced.append(param.coerce(v))
            except ParamError as exc:
                errors.append(f"{label}: {exc}")
        axes.append((param.name, coerced))
    if len(errors) > n_errors:
        return []
    names = [a[0] for a in axes]
    combos = [dict(zip(names, values)) for values in itertools.product(*(a[1] for a in axes))]
    if task.check is not None:
        seen: set[str] = set()
        for combo in combos:
            for message in task.check(combo):
                if message not in seen:
                    seen.add(message)
                    errors.append(f"{where}: {message}")
    return combos
