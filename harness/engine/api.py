"""Running a sweep from Python: `harness.run(spec, results=..., **executor options)`.

The command line (`harness run`) and this function share everything below: the same
validation (bad input raises SpecError before anything is written), the same choice of
pending units, the same run record, the same executors.
"""

from __future__ import annotations

import datetime as dt
import socket
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, TextIO

from harness.engine.executor import run_units
from harness.engine.params import canonical_json
from harness.engine.progress import Progress
from harness.engine.run_config import RunConfig, RunSummary
from harness.engine.spec import (EXECUTOR_PARAMS, Spec, SpecError, coerce_options, load_spec,
                                 validate)
from harness.engine.store import Store
from harness.engine.units import WorkUnit

#: Units whose params a dry run prints, per task.
DRY_RUN_SHOWN = 3


def run(spec: str | Path | Mapping[str, Any] | Spec, results: str = "results",
        overrides: Iterable[str] = (), *, shard: tuple[int, int] | None = None,
        repair: bool = False, rerun: Iterable[str] = (), dry_run: bool = False,
        address: str | None = None, **executor: Any) -> RunSummary:
    """Run the pending units of a sweep and return the summary (counts, errors, seconds).

    `spec`: a sweep file's path, a name in sweeps/, a dict shaped like a sweep file, or a
    validated Spec. `executor`: the keys of a sweep file's `executor:` section (`kind`,
    `workers`, `unit_timeout`, ...); they win over the file's. `rerun`: tasks whose units run
    again even when stored. `dry_run`: print the units to stdout, run and write nothing, and
    return a summary whose `total` counts the units that would run. Raises SpecError (a ValueError) naming every bad field; nothing is
    written then. A failed unit does not raise: see `summary.failed` and `summary.errors`.
    """
    the_spec = as_spec(spec, list(overrides), results)
    config = run_config(the_spec, executor, address=address)
    return execute(the_spec, results, config, shard=shard, repair=repair, rerun=rerun,
                   dry_run=dry_run)


def as_spec(spec: str | Path | Mapping[str, Any] | Spec, overrides: list[str],
            results: str) -> Spec:
    """Validate a sweep given in any of the forms `run` takes."""
    if isinstance(spec, Spec):
        if overrides:
            raise SpecError(["overrides: apply them to the document, not to a validated Spec"])
        return spec
    if isinstance(spec, (str, Path)):
        return load_spec(str(spec), overrides, results)
    if isinstance(spec, Mapping):
        from harness.engine.checkpoint_refs import resolve_checkpoint_refs
        from harness.engine.spec import apply_overrides

        document = apply_overrides(dict(spec), overrides)
        return validate(resolve_checkpoint_refs(document, results))
    raise SpecError([f"spec: expected a sweep file path, a sweep name, a dict or a Spec, got "
                     f"{type(spec).__name__}"])


def run_config(spec: Spec, options: Mapping[str, Any], address: str | None = None,
               names: Mapping[str, str] | None = None) -> RunConfig:
    """The spec's executor section with `options` applied (they win); errors call an option
    by its `names` entry (the CLI names its flags)."""
    allowed = ", ".join(p.name for p in EXECUTOR_PARAMS)
    errors: list[str] = []
    values = {**spec.executor, **coerce_options(
        dict(options), EXECUTOR_PARAMS, errors, label=lambda key: (names or {}).get(key, key),
        unknown=lambda key: f"{key}: unknown executor option; allowed: {allowed}, address")}
    if errors:
        raise SpecError(errors)
    return RunConfig(address=address, **values)


def provenance(spec: Spec, config: RunConfig) -> dict[str, Any]:
    """One run of a sweep: its spec, executor, software, host, time and command line."""
    from harness.engine.provenance import environment

    return {
        "sweep": spec.name,
        "spec": spec.document,
        "executor": asdict(config),
        "versions": environment(),
        "host": socket.gethostname(),
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "argv": sys.argv,
    }


def in_shard(unit_id: str, shard: tuple[int, int] | None) -> bool:
    """Disjoint, deterministic split of a sweep's units by their id (hex digits)."""
    return shard is None or int(unit_id, 16) % shard[1] == shard[0]


def repair_store(store: Store, sweep: str, tasks: list[str]) -> int:
    """Move unreadable stored files aside (their units become pending); returns how many."""
    moved = 0
    for task in tasks:
        for path, reason in store.verify(sweep, task):
            target = store.quarantine(path)
            print(f"repair: {path}: {reason}; moved to {target}", file=sys.stderr)
            moved += 1
    return moved


def by_task(units: list[WorkUnit]) -> dict[str, list[WorkUnit]]:
    out: dict[str, list[WorkUnit]] = {}
    for u in units:
        out.setdefault(u.task, []).append(u)
    return out


def check_rerun(spec: Spec, store: Store, rerun: Iterable[str]) -> set[str]:
    """The tasks named by `rerun`, each a task of the sweep whose stored units a new file can
    replace (rows inside a compacted part cannot be replaced: readers take the part's)."""
    tasks = {rerun} if isinstance(rerun, str) else set(rerun)
    errors = [f"rerun: {t}: not a task of sweep {spec.name}; its tasks: {', '.join(spec.combos)}"
              for t in sorted(tasks - set(spec.combos))]
    for task in sorted(tasks & set(spec.combos)):
        if store.compacted_index(spec.name, task):
            errors.append(f"rerun: {task}: sweep {spec.name} has compacted parts of this task; "
                          "re-running cannot replace rows inside them: move "
                          f"{store.dir(spec.name, task)} aside (or run under another sweep name)")
    if errors:
        raise SpecError(errors)
    return tasks


def execute(spec: Spec, results: str, config: RunConfig, *, shard: tuple[int, int] | None = None,
            repair: bool = False, rerun: Iterable[str] = (), dry_run: bool = False,
            out: TextIO | None = None) -> RunSummary:
    """Run the pending units of a validated spec, printing what happens to stderr.

    A dry run prints the units per task to `out` (stdout) and writes nothing.
    """
    store = Store(results)
    rerun_tasks = check_rerun(spec, store, rerun)
    if repair and not dry_run:
        repair_store(store, spec.name, list(spec.combos))
    units = [u for u in spec.units() if in_shard(u.unit_id, shard)]
    done = {t: set() if t in rerun_tasks else store.unit_ids(spec.name, t) for t in spec.combos}
    pending = [u for u in units if u.unit_id not in done[u.task]]
    counts = ", ".join(f"{t}: {len(c)}" for t, c in by_task(units).items())
    where = f" (shard {shard[0]}/{shard[1]})" if shard else ""
    print(f"sweep {spec.name}{where}: {len(units)} units ({counts}); "
          f"{len(units) - len(pending)} done, {len(pending)} to run -> {store.root}/{spec.name}",
          file=sys.stderr)
    if dry_run:
        print_plan(spec, units, pending, out or sys.stdout)
        return RunSummary(total=len(pending))
    if not pending:
        print("nothing to run: every unit is done", file=sys.stderr)
        return RunSummary()
    store.write_manifest(spec.name, provenance(spec, config))
    summary = run_units(pending, results, config, Progress(len(pending)))
    nodes = ", ".join(f"{n or 'driver'}: {c}" for n, c in summary.nodes.items())
    print(f"ran {summary.done + summary.failed} of {len(pending)} units in {summary.seconds:.1f}s: "
          f"{summary.done} done, {summary.failed} failed (per node: {nodes})", file=sys.stderr)
    return summary


def print_plan(spec: Spec, units: list[WorkUnit], pending: list[WorkUnit], out: TextIO) -> None:
    """Per task: how many units, how many to run, and the first units' params (those not at
    their task's default)."""
    from harness.engine.registry import get_task

    to_run = {u.unit_id for u in pending}
    print(f"dry run of sweep {spec.name}: nothing is run or written", file=out)
    for task_name, task_units in by_task(units).items():
        task = get_task(task_name)
        n_run = sum(u.unit_id in to_run for u in task_units)
        print(f"{task_name}: {len(task_units)} units, {len(task_units) - n_run} done, "
              f"{n_run} to run", file=out)
        for unit in task_units[:DRY_RUN_SHOWN]:
            shown = {p.name: unit.params[p.name] for p in task.params
                     if p.required or unit.params[p.name] != p.default}
            state = "run " if unit.unit_id in to_run else "done"
            print(f"  {state} {unit.unit_id}  " + " ".join(
                f"{k}={canonical_json(v) if isinstance(v, (list, dict)) else v}"
                for k, v in shown.items()), file=out)
        if len(task_units) > DRY_RUN_SHOWN:
            print(f"  ... and {len(task_units) - DRY_RUN_SHOWN} more", file=out)
