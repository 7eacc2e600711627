"""`harness` command line: run, status, compact, list, report, demo.

Exit codes: 0 every unit done; 1 some units failed (see `_failures`);
2 bad input (nothing was written); 130 interrupted (finished units kept).
"""

from __future__ import annotations

import argparse
import json
import logging
import posixpath
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from harness import __version__
from harness.engine import api
from harness.engine.api import by_task
from harness.engine.context import PROGRESS_FILE
from harness.engine.executor import ExecutorError, RunConfig
from harness.engine.spec import Spec, SpecError, load_spec, resolve_sweep_path, validate
from harness.engine.store import ARTIFACTS, Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_RESULTS = "results"
DEMO_SWEEPS = ("demo_train", "demo", "demo_features", "demo_robustness", "demo_landscape",
               "demo_hessian")
DEMO_REPORT = "report"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    try:
        # Overrides may come before or after the flags: collect the stray ones.
        args, extras = parser.parse_known_args(argv)
        stray = [e for e in extras if e.startswith("-") or not hasattr(args, "overrides")]
        if stray:
            parser.error(f"unrecognized arguments: {' '.join(stray)}")
        if extras:
            args.overrides = [*args.overrides, *extras]
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("harness").setLevel(logging.INFO)
    try:
        return args.func(args)
    except SpecError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ExecutorError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="harness", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"harness {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run a sweep (skips units already done)")
    run.add_argument("sweep", help="sweep file, or a name in sweeps/")
    run.add_argument("overrides", nargs="*", metavar="key.sub=value",
                     help="override fields of the sweep file, e.g. tasks.evaluate.seed=[0,1]")
    _add_run_flags(run)
    run.add_argument("--shard", type=_shard, metavar="I/N",
                     help="run only the units with unit_id mod N == I (several drivers on "
                     "disjoint parts of one sweep)")
    run.add_argument("--repair", action="store_true",
                     help="first read back every stored file; move unreadable ones to "
                     "<task>/_corrupt/ and re-run their units")
    run.add_argument("--dry-run", action="store_true", dest="dry_run",
                     help="validate, print the units per task (the first few with their "
                     "params) and what is done; run and write nothing")
    run.add_argument("--rerun", action="append", metavar="TASK",
                     help="run this task's units again even where stored, replacing their "
                     "files (repeatable; e.g. after changing what the task computes)")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="done / pending / failed units per task")
    status.add_argument("sweep", help="sweep file, a name in sweeps/, or a sweep under --results")
    status.add_argument("overrides", nargs="*", metavar="key.sub=value")
    status.add_argument("--results", default=DEFAULT_RESULTS, help="results root (path or URI)")
    status.add_argument("--no-verify", action="store_false", dest="verify",
                        help="count files only; skip reading them back (checksums, unit ids)")
    status.set_defaults(func=cmd_status)

    compact = sub.add_parser("compact", help="merge a sweep's per-unit files into a few large "
                             "Parquet files (reads stay the same; resume still works)")
    compact.add_argument("sweep", help="a sweep name under --results")
    compact.add_argument("--results", default=DEFAULT_RESULTS, help="results root (path or URI)")
    compact.set_defaults(func=cmd_compact)

    lst = sub.add_parser("list", help="list tasks, models or datasets")
    lst.add_argument("what", nargs="?", choices=("tasks", "models", "datasets"), default="tasks")
    lst.set_defaults(func=cmd_list)

    report = sub.add_parser("report", help="render every table and plot the results allow into "
                            "one static HTML page")
    report.add_argument("--results", default=DEFAULT_RESULTS, help="results root (path or URI)")
    report.add_argument("--sweep", action="append", dest="sweeps", metavar="NAME",
                        help="only these sweeps (repeatable; default: every sweep under --results)")
    report.add_argument("-o", "--out", default="report", help="output directory (default: report/)")
    report.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="train the demo models and run every analysis of the paper on them")
    _add_run_flags(demo)
    demo.set_defaults(func=cmd_demo)
    return p


def _add_run_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default=DEFAULT_RESULTS, help="results root: a path or a "
                   "pyarrow filesystem URI (file://, s3://, gs://); default: results/")
    p.add_argument("--executor", choices=("local", "ray"), help="where units run (default: ray)")
    p.add_argument("--address", help="join a running Ray cluster instead of starting one")
    p.add_argument("--workers", type=int, help="worker actors (default: one per CPU/GPU share)")
    p.add_argument("--num-gpus", type=float, dest="num_gpus", help="GPUs per worker (fractions ok)")
    p.add_argument("--num-cpus", type=float, dest="num_cpus", help="CPUs per worker")
    p.add_argument("--max-retries", type=int, dest="max_retries",
                   help="re-runs of a unit whose worker died")
    p.add_argument("--retry-failures", type=int, dest="retry_failures",
                   help="re-runs of a unit that raised or timed out (default 0)")
    p.add_argument("--unit-timeout", type=float, dest="unit_timeout",
                   help="seconds a unit may run before it is stopped and recorded as failed")
    p.add_argument("--max-batch", type=int, dest="max_batch",
                   help="most units per actor call (default 64; 1 sends units one by one)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), help="local executor device")


#: Command-line flag (argparse dest) -> executor option.
FLAG_OPTIONS = {"executor": "kind", "workers": "workers", "num_gpus": "num_gpus",
                "num_cpus": "num_cpus", "max_retries": "max_retries", "device": "device",
                "retry_failures": "retry_failures", "unit_timeout": "unit_timeout",
                "max_batch": "max_batch"}


def run_config(spec: Spec, args: argparse.Namespace) -> RunConfig:
    """The spec's executor section with command-line flags applied (flags win)."""
    options = {key: getattr(args, flag) for flag, key in FLAG_OPTIONS.items()
               if getattr(args, flag, None) is not None}
    flags = {key: "--" + flag.replace("_", "-") for flag, key in FLAG_OPTIONS.items()}
    return api.run_config(spec, options, address=args.address, names=flags)


def _shard(text: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected I/N, e.g. 0/4") from None
    if not 0 <= i < n:
        raise argparse.ArgumentTypeError(f"{text!r}: need 0 <= I < N")
    return i, n


def execute(spec: Spec, args: argparse.Namespace) -> int:
    """Run the pending units of a validated spec; the exit code says how it went."""
    summary = api.execute(spec, args.results, run_config(spec, args),
                          shard=getattr(args, "shard", None),
                          repair=getattr(args, "repair", False),
                          rerun=getattr(args, "rerun", None) or (),
                          dry_run=getattr(args, "dry_run", False))
    if summary.interrupted:
        print("interrupted: finished units are kept; run the same command again to resume",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if summary.failed:
        for line in summary.errors[:5]:
            print(f"  failed {line}", file=sys.stderr)
        print(f"tracebacks: harness.load({args.results!r}, task='_failures', sweep={spec.name!r})",
              file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    return execute(load_spec(args.sweep, args.overrides, args.results), args)


def cmd_status(args: argparse.Namespace) -> int:
    store = Store(args.results)
    try:
        spec = load_spec(args.sweep, args.overrides, args.results)
    except SpecError:
        manifest = store.read_manifest(args.sweep)
        if manifest is None:
            raise
        spec = validate(manifest["spec"])
    failed = store.unit_ids(spec.name, "_failures")
    print(f"sweep {spec.name} in {store.root}/{spec.name}")
    print(f"{'task':<16}{'total':>8}{'done':>8}{'failed':>8}{'pending':>9}")
    corrupt, reports = [], []
    for task, units in by_task(spec.units()).items():
        ids = {u.unit_id for u in units}
        done = ids & store.unit_ids(spec.name, task)
        bad = (ids & failed) - done
        print(f"{task:<16}{len(ids):>8}{len(done):>8}{len(bad):>8}{len(ids - done - bad):>9}")
        reports += [(task, uid, r) for uid, r in _progress_reports(store, spec.name, task, ids - done)]
        if args.verify:
            corrupt += store.verify(spec.name, task)
    if reports:
        print("units not done that reported progress (running, or stopped there and resumable):")
        now = time.time()
        for task, uid, report in reports:
            shown = (f"epoch {report['epoch']}/{report['epochs']}" if "epochs" in report else
                     " ".join(f"{k}={v}" for k, v in sorted(report.items())
                              if k not in ("unit_id", "updated")))
            ago = _clock_ago(now - float(report.get("updated", now)))
            print(f"  {task:<14}{uid}  {shown}  (reported {ago} ago)")
    if corrupt:
        print(f"{len(corrupt)} stored file(s) cannot be read back (counted as done above):",
              file=sys.stderr)
        for path, reason in corrupt:
            print(f"  corrupt {path}: {reason}", file=sys.stderr)
        print(f"fix: harness run {args.sweep} --repair --results {args.results}  (moves them to "
              "<task>/_corrupt/ and re-runs their units)", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def _progress_reports(store: Store, sweep: str, task: str,
                      ids: set[str]) -> list[tuple[str, dict[str, Any]]]:
    """(unit id, last progress report) of the units in `ids` that wrote one, by unit id."""
    parent = posixpath.join(store.base, sweep, ARTIFACTS, task)
    found = []
    for entry in store.fs.get_file_info(pafs.FileSelector(parent, allow_not_found=True)):
        if entry.type != pafs.FileType.Directory or entry.base_name not in ids:
            continue
        path = posixpath.join(entry.path, PROGRESS_FILE)
        if store.fs.get_file_info(path).type != pafs.FileType.File:
            continue
        with store.fs.open_input_stream(path) as fh:
            try:
                found.append((entry.base_name, json.loads(fh.read())))
            except ValueError:
                continue  # an unreadable report only hides the line, never the table
    return sorted(found)


def _clock_ago(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds}s" if seconds < 120 else f"{seconds // 60}min"


def cmd_compact(args: argparse.Namespace) -> int:
    from harness.engine.compact import CompactError, compact_sweep, describe

    store = Store(args.results)
    if args.sweep not in store.sweeps():
        known = ", ".join(store.sweeps()) or "none"
        raise SpecError([f"compact: no sweep {args.sweep!r} under {store.root}; sweeps: {known}"])
    try:
        print(describe(compact_sweep(args.results, args.sweep)))
    except CompactError as exc:
        print(f"harness: {exc}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    if args.what == "tasks":
        from harness.engine.registry import load_tasks

        for name, task in sorted(load_tasks().items()):
            print(f"{name}: {task.description}")
            for p in task.params:
                print(f"    {p.describe()}")
    elif args.what == "models":
        import torch

        from harness.models.registry import MODELS, build_model, count_params

        width = max(map(len, MODELS))
        for name, entry in sorted(MODELS.items()):
            with torch.device("meta"):
                n = count_params(build_model(name, 10))
            print(f"{name:<{width}} {n / 1e6:7.2f}M params (10 classes)  {entry.description}")
        print(f"{'timm:<name>':<{width}}  any timm model, e.g. timm:resnet50 (`pretrained: true` "
              "in model_args needs cached weights or a network)")
    else:
        from harness.data.datasets import DATASETS, dataset_names

        for name in dataset_names():
            doc = (DATASETS[name].__doc__ or "").strip().splitlines()
            print(f"{name:<12}{doc[0] if doc else ''}")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    from harness.report import write_report

    index = write_report(args.results, args.out, sweeps=args.sweeps)
    print(f"report: {index}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """Train the demo models (demo_train.yaml), then evaluate (demo.yaml), analyse the
    feature maps and lesions (demo_features.yaml), measure the robustness
    (demo_robustness.yaml), the loss landscapes (demo_landscape.yaml) and the Hessian
    (demo_hessian.yaml) of every checkpoint; end with the HTML report of all six."""
    from harness.engine.store import load

    worst = EXIT_OK
    for name in DEMO_SWEEPS:
        spec = load_spec(str(resolve_sweep_path(name)), results_root=args.results)
        code = execute(spec, args)
        if code not in (EXIT_OK, EXIT_FAILED):
            return code
        worst = max(worst, code)
    evaluated = load(args.results, task="evaluate", sweep="demo", quantity="metrics")
    trained = load(args.results, task="train", sweep="demo_train",
                   columns=["checkpoint", "data_fraction", "epoch"])
    table = evaluated.drop(columns=["data_fraction"]).merge(trained, on="checkpoint")
    cols = ["model", "data_fraction", "epoch", "num_params", "acc", "nll", "ece"]
    print(table[cols].rename(columns={"data_fraction": "train_fraction"})
          .sort_values(["model", "train_fraction", "epoch"])
          .to_string(index=False, float_format="%.4f"))
    _print_feature_summary(args.results, trained)
    where = args.results if "://" in args.results else str(Path(args.results).resolve())
    print(f"results: {where} (sweeps {', '.join(DEMO_SWEEPS)})")
    print(f"read them with: python -c \"import harness; print(harness.load({args.results!r}, "
          f"task='evaluate', sweep='demo', quantity='metrics'))\"")
    from harness.report import write_report

    index = write_report(args.results, DEMO_REPORT, sweeps=list(DEMO_SWEEPS))
    print(f"report: {index.resolve()}")
    return worst


def _print_feature_summary(results: str, trained: Any) -> None:
    """Per final model: mean Δ log amplitude at the highest frequency and mean feature-map
    variance over the blocks of each kind (the paper's Fig. 8 / 9 in one line each)."""
    from harness.engine.store import load

    fourier = load(results, task="fourier", sweep="demo_features")
    featvar = load(results, task="featvar", sweep="demo_features", definition="spatial")
    final = trained[trained["epoch"] == trained["epoch"].max()][["checkpoint", "data_fraction"]]
    top = fourier[fourier["is_max_frequency"]].drop(columns="data_fraction").merge(final,
                                                                                 on="checkpoint")
    var = featvar.drop(columns="data_fraction").merge(final, on="checkpoint")
    keys = ["model", "data_fraction", "block_kind"]
    table = (top.groupby(keys)["delta_log_amplitude"].mean().rename("dlogamp_at_max_freq")
             .to_frame().join(var.groupby(keys)["variance"].mean().rename("feature_variance")))
    print("\nfinal checkpoints, mean over blocks of each kind:")
    print(table.reset_index().rename(columns={"data_fraction": "train_fraction"})
          .to_string(index=False, float_format="%.3f"))


if __name__ == "__main__":
    raise SystemExit(main())
