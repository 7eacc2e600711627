"""`checkpoint: sweep:<name>` in a sweep document: every checkpoint a train sweep wrote.

Resolved on the driver before validation, from the stored results (so it is the engine's
business, not the checkpoints'): the building block `harness.models.checkpoints` reads and
writes one checkpoint and knows nothing of sweeps.
"""

from __future__ import annotations

from typing import Any

from harness.engine.errors import SpecError
from harness.engine.store import load
from harness.fileio import resolve_in_root
from harness.models.checkpoints import WEIGHTS_SUFFIX, CheckpointError, read_sidecar

SWEEP_REF = "sweep:"


def resolve_checkpoint_refs(document: dict[str, Any], results_root: str) -> dict[str, Any]:
    """Expand `checkpoint:` values of a sweep document before validation.

    `sweep:<name>` becomes every checkpoint the train task of sweep <name>
    wrote under `results_root` (as its rows store them: relative to the root,
    so the expanded unit ids do not depend on where the tree lives); every harness checkpoint then fills in its
    block's `model` and `model_args` from its sidecar, so rows name the
    architecture. Each checkpoint gets its own block (checkpoints are zipped
    with their architecture, not crossed with other blocks' models).
    Raises SpecError naming the field when a reference finds nothing.
    """
    tasks = document.get("tasks")
    if not isinstance(tasks, dict):
        return document
    errors: list[str] = []
    out = dict(document, tasks=dict(tasks))
    for task_name, blocks in tasks.items():
        if not isinstance(blocks, (dict, list)):
            continue
        block_list = blocks if isinstance(blocks, list) else [blocks]
        if not any(isinstance(b, dict) and "checkpoint" in b for b in block_list):
            continue
        expanded = []
        for i, block in enumerate(block_list):
            if not isinstance(block, dict) or "checkpoint" not in block:
                expanded.append(block)
                continue
            where = f"tasks.{task_name}" + (f".{i}" if isinstance(blocks, list) else "") + ".checkpoint"
            values = block["checkpoint"] if isinstance(block["checkpoint"], list) else [block["checkpoint"]]
            paths: list[str] = []
            for value in values:
                if isinstance(value, str) and value.startswith(SWEEP_REF):
                    sweep = value[len(SWEEP_REF):]
                    df = load(results_root, task="train", sweep=sweep, columns=["checkpoint"])
                    found = sorted(df["checkpoint"].dropna()) if len(df) else []
                    if not found:
                        errors.append(f"{where}: {value}: no checkpoints of sweep {sweep!r} under "
                                      f"{results_root!r} (run that train sweep first, or check "
                                      "--results)")
                    paths += found
                else:
                    paths.append(value)
            for path in paths:
                new = dict(block, checkpoint=path)
                if isinstance(path, str) and path.endswith(WEIGHTS_SUFFIX):
                    try:
                        meta = read_sidecar(resolve_in_root(results_root, path))
                    except CheckpointError as exc:
                        errors.append(f"{where}: {exc}")
                        continue
                    new.setdefault("model", meta["model"])
                    new.setdefault("model_args", meta["model_args"])
                expanded.append(new)
        out["tasks"][task_name] = expanded
    if errors:
        raise SpecError(errors)
    return out
