"""`harness report`: one static HTML page with every table and plot the results allow.

The page (`index.html`) sits beside its files: `plots/*.png|pdf` and
`tables/*.csv|md`. No server, no JavaScript. Each item is computed on its
own: an item whose rows are missing says so in its place, an item that
fails shows its error in its place, and the rest of the page still renders —
so it works on the partial results of a sweep that is still running. All
text from the results is escaped.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import shutil
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from harness.report import claims, guide, plots, tables
from harness.report.frames import final_epochs, metrics_rows, train_final, with_training
from harness.report.tables import NoData
from harness.engine.store import Store, load

#: Tasks read for the report, in the order their sections appear.
TASKS = ("train", "evaluate", "corruption", "freqnoise", "landscape", "hessian", "fourier",
         "featvar", "lesion")
MAX_LANDSCAPES = 6


@dataclass
class Item:
    """One table or figure of the page (or the reason it is not there)."""

    title: str
    caption: str
    body: str = ""
    files: list[str] = field(default_factory=list)
    state: str = "ok"  # ok | missing | error
    read: str = ""  # figures: one line on how to read them


@dataclass
class Section:
    title: str
    intro: str = ""
    items: list[Item] = field(default_factory=list)


class Report:
    """Collects items, writing each table's and figure's files as it goes."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.sections: list[Section] = []
        self.count = 0
        self.started = time.perf_counter()

    def section(self, title: str, intro: str = "") -> Section:
        self.sections.append(Section(title, intro))
        return self.sections[-1]

    def _progress(self, title: str, state: str) -> None:
        self.count += 1
        elapsed = time.perf_counter() - self.started
        print(f"report: [{self.count:>2}] {title}: {state} ({elapsed:.1f}s)", file=sys.stderr,
              flush=True)

    def _guard(self, section: Section, title: str, caption: str,
               make: Callable[[], Item]) -> None:
        try:
            item = make()
        except NoData as exc:
            item = Item(title, caption, f"<p class='missing'>Not shown: {_e(str(exc))}.</p>",
                        state="missing")
        except Exception:  # noqa: BLE001 - one failing item must not kill the page
            item = Item(title, caption, "<pre class='error'>" + _e(traceback.format_exc())
                        + "</pre>", state="error")
        section.items.append(item)
        self._progress(title, item.state)

    def table(self, section: Section, name: str, title: str, caption: str,
              make: Callable[[], pd.DataFrame]) -> None:
        def build() -> Item:
            df = make()
            if not len(df):
                raise NoData("the table is empty")
            folder = self.out / "tables"
            folder.mkdir(parents=True, exist_ok=True)
            df.to_csv(folder / f"{name}.csv", index=False)
            shown = tables.display(df)  # "mean ± std" cells; the CSV keeps the numbers
            (folder / f"{name}.md").write_text(to_markdown(shown))
            body = shown.to_html(index=False, na_rep="–", float_format=_fmt, border=0,
                                 classes="tbl", escape=True)
            return Item(title, caption, f"<div class='scroll'>{body}</div>",
                        [f"tables/{name}.csv", f"tables/{name}.md"])
        self._guard(section, title, caption, build)

    def figure(self, section: Section, name: str, title: str, caption: str,
               make: Callable[[], Any]) -> None:
        def build() -> Item:
            fig = make()
            png, pdf = plots.save_figure(fig, self.out / "plots", name)
            src = f"plots/{png.name}"
            return Item(title, caption, f"<img src='{_e(src)}' alt='{_e(title)}'>",
                        [src, f"plots/{pdf.name}"], read=guide.how_to_read(name))
        self._guard(section, title, caption, build)

    def note(self, section: Section, title: str, text_html: str) -> None:
        section.items.append(Item(title, "", text_html))


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _fmt(x: float) -> str:
    return f"{x:.4g}"


def to_markdown(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (floats to 4 significant digits)."""
    def cell(v: Any) -> str:
        if isinstance(v, float):
            return "–" if pd.isna(v) else f"{v:.4g}"
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *rows]) + "\n"


# --------------------------------------------------------------------------- data


def _load_all(results: str, sweeps: list[str]) -> dict[str, pd.DataFrame]:
    """Every task's rows over the chosen sweeps; train rows of every sweep for the join."""
    store = Store(results)
    frames: dict[str, pd.DataFrame] = {}
    present = {t for s in sweeps for t in store.tasks(s)}
    for task in TASKS:
        if task in present:
            print(f"report: loading {task}", file=sys.stderr, flush=True)
            frames[task] = load(results, task=task, sweep=sweeps)
    everywhere = {t for s in store.sweeps() for t in store.tasks(s)}
    train_all = load(results, task="train", sweep=store.sweeps()) if "train" in everywhere else None
    for task, df in list(frames.items()):
        if task != "train" and "checkpoint" in df.columns:
            frames[task] = with_training(df, train_all)
    return frames


def _unit_status(store: Store, sweep: str) -> tuple[list[tuple[str, int, int, int, int]], str]:
    """(task, total, done, failed, pending) per task from the stored spec; a note if unknown."""
    manifest = store.read_manifest(sweep)
    failed = store.unit_ids(sweep, "_failures")
    found = store.tasks(sweep)
    if manifest is None or "spec" not in manifest:
        return ([(t, -1, len(store.unit_ids(sweep, t)), -1, -1) for t in found],
                "no stored spec (_sweep.json): totals unknown")
    try:
        from harness.engine.spec import validate

        units = validate(manifest["spec"]).units()
    except Exception as exc:  # noqa: BLE001 - a spec that no longer validates
        return ([(t, -1, len(store.unit_ids(sweep, t)), -1, -1) for t in found],
                f"the stored spec does not expand here ({type(exc).__name__}: {exc})")
    by_task: dict[str, set[str]] = {}
    for u in units:
        by_task.setdefault(u.task, set()).add(u.unit_id)
    rows = []
    for task, ids in by_task.items():
        done = ids & store.unit_ids(sweep, task)
        bad = (ids & failed) - done
        rows.append((task, len(ids), len(done), len(bad), len(ids - done - bad)))
    return rows, ""


# --------------------------------------------------------------------------- sections


def _overview(report: Report, store: Store, sweeps: list[str]) -> list[str]:
    """Units per task and sweep; returns lines naming what is still pending."""
    sec = report.section("Sweeps", "Units per task: done, failed and still pending (from the "
                         "spec stored in each sweep's _sweep.json).")
    pending_lines = []
    for sweep in sweeps:
        rows, note = _unit_status(store, sweep)
        body = [("<table class='tbl'><tr><th>task</th><th>units</th><th>done</th><th>failed</th>"
                "<th>pending</th></tr>")]
        for task, total, done, bad, pend in rows:
            show = [("?" if v < 0 else v) for v in (total, done, bad, pend)]
            body.append("<tr>" + "".join(f"<td>{_e(v)}</td>" for v in (task, *show)) + "</tr>")
            if pend > 0:
                pending_lines.append(f"{sweep}/{task}: {pend} of {total} units pending")
        body.append("</table>")
        if note:
            body.append(f"<p class='missing'>{_e(note)}</p>")
        report.note(sec, f"sweep {sweep}", "".join(body))
    return pending_lines


def _claims(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("The paper's claims", "Each claim of Park & Kim (2022) in one line, "
                         "the numbers these results give for it, and the verdict those numbers "
                         "imply (see harness/report/claims.py for how each is computed).")

    def build() -> Item:
        df = claims.claims_table(f)
        folder = report.out / "tables"
        folder.mkdir(parents=True, exist_ok=True)
        df.to_csv(folder / "claims.csv", index=False)
        (folder / "claims.md").write_text(to_markdown(df))
        rows = "".join(
            f"<tr><td>{_e(r.claim)}</td><td>{_e(r.paper)}</td><td>{_e(r.evidence)}</td>"
            f"<td class='v-{r.verdict.replace(' ', '-')}'>{_e(r.verdict)}</td></tr>"
            for r in df.itertuples())
        counts = df["verdict"].value_counts()
        summary = ", ".join(f"{counts.get(v, 0)} {v}" for v in (
            claims.SUPPORTED, claims.NOT_SUPPORTED, claims.NOT_MEASURED))
        body = (f"<p>{_e(summary)}.</p><div class='scroll'><table class='tbl claims'><tr>"
                "<th>claim</th><th>paper</th><th>these results</th><th>verdict</th></tr>"
                f"{rows}</table></div>")
        return Item("Claims and verdicts", "Supported: the numbers go the paper's way; not "
                    "supported: the other way; not measured: the rows are missing (the line "
                    "names the sweep that measures them). Small CPU models on digits need not "
                    "behave like the paper's CIFAR models.", body,
                    ["tables/claims.csv", "tables/claims.md"])
    report._guard(sec, "Claims and verdicts", "", build)


def _models(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("Models", "Test metrics per model; values are means over seeds and "
                         "training runs (n).")
    ev = f.get("evaluate")
    report.table(sec, "model_comparison", "Model comparison",
                 "Accuracy, NLL, ECE (and Acc-90, Unc-90, … when measured) and parameter count "
                 "per model, from the evaluate task.",
                 lambda: tables.model_comparison(_need(ev, "evaluate")))
    report.figure(sec, "reliability", "Reliability diagrams",
                  "Accuracy per confidence bin (bars) against perfect calibration (dashed); "
                  "dots mark each bin's mean confidence and accuracy.",
                  lambda: plots.plot_reliability(_need(ev, "evaluate")))
    tr = f.get("train")
    report.table(sec, "data_size_train", "Data-size ablation (train task)",
                 "Final test accuracy of each training run per training-data fraction.",
                 lambda: tables.data_size_ablation(train_final(_need(tr, "train")), "acc"))
    report.figure(sec, "data_size", "Accuracy vs data size",
                  "Final test accuracy vs the fraction of training data, per architecture "
                  "(from evaluate when it evaluated train checkpoints, else from train).",
                  lambda: plots.plot_data_size(_data_size_rows(ev, tr), "acc"))
    report.figure(sec, "training", "Training curves",
                  "Training loss per epoch, and test accuracy at each checkpointed epoch.",
                  lambda: plots.plot_training(_need(tr, "train")))


def _data_size_rows(ev: pd.DataFrame | None, tr: pd.DataFrame | None) -> pd.DataFrame:
    if ev is not None and "train_fraction" in ev.columns and ev["train_fraction"].notna().any():
        return final_epochs(metrics_rows(ev))
    return train_final(_need(tr, "train"))


def _robustness(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("Robustness", "Corruption robustness (Fig. 12) and robustness to "
                         "band-limited noise (Fig. 2b).")
    cor = f.get("corruption")
    report.table(sec, "robustness", "Corruption robustness",
                 "Clean accuracy, robustness (mean accuracy over every corruption × severity "
                 "set measured; the paper's 75) and the mean accuracy per corruption.",
                 lambda: tables.robustness(_need(cor, "corruption")))
    report.table(sec, "mce", "Mean corruption error",
                 "CE per corruption = Σ_s err / Σ_s err of the reference model; mCE = their "
                 "mean (relative mCE subtracts the clean error).",
                 lambda: tables.mce(_need(cor, "corruption")))
    report.figure(sec, "robustness_severity", "Robustness vs severity",
                  "Accuracy averaged over corruptions at each severity (0: clean).",
                  lambda: plots.plot_robustness(_need(cor, "corruption")))
    fn = f.get("freqnoise")
    report.table(sec, "freqnoise", "Frequency-noise accuracy drop",
                 "Accuracy drop per noise frequency (units of π), mean over seeds.",
                 lambda: tables.frequency_noise(_need(fn, "freqnoise")))
    report.figure(sec, "freqnoise", "Accuracy drop vs noise frequency",
                  "Accuracy lost under noise confined to a frequency band around each "
                  "frequency (Fig. 2b): low-pass models suffer most from low frequencies.",
                  lambda: plots.plot_freqnoise(_need(fn, "freqnoise")))


def _landscapes(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("Loss landscapes", "The objective NLL + weight decay × penalty on "
                         "the fixed augmented batches, around each model (Fig. 1a, 1b).")
    ls = f.get("landscape")
    report.table(sec, "landscape_summary", "Landscape summary",
                 "Per landscape: the objective at the origin and its minimum, the mean and "
                 "largest rise within radius 0.5 of the origin (grid coordinates), accuracy "
                 "at the origin, and grid points done of expected.",
                 lambda: tables.landscape_summary(_need(ls, "landscape")))
    try:  # plots: each training run's last checkpoint (the table above has them all)
        groups, _ = tables.landscape_groups(final_epochs(_need(ls, "landscape")))
    except NoData as exc:
        groups = []
        report.note(sec, "Landscape plots", f"<p class='missing'>Not shown: {_e(exc)}.</p>")
    two_d = sorted((g for g in groups if _dims(g[2]) == 2), key=_random_first)
    for i, (label, _, grid) in enumerate(two_d[:MAX_LANDSCAPES]):
        report.figure(sec, f"landscape_contour_{i}", f"Contours: {label}",
                      "The loss surface around the model (objective − its minimum) on the "
                      "plane of two filter-normalized directions; + marks the model.",
                      lambda grid=grid, label=label: plots.plot_landscape_contour(
                          grid, title=label))
        report.figure(sec, f"landscape_surface_{i}", f"Surface: {label}",
                      "The same landscape as a 3D surface.",
                      lambda grid=grid, label=label: plots.plot_landscape_surface(
                          grid, title=label))
    if len(two_d) > MAX_LANDSCAPES:
        report.note(sec, "More landscapes", f"<p>{len(two_d) - MAX_LANDSCAPES} more 2D "
                    "landscapes are in the summary table and the results, not plotted.</p>")
    one_d = [g for g in groups if _dims(g[2]) == 1]
    if one_d:
        report.figure(sec, "landscape_1d", "1D landscapes",
                      "Loss along one direction (or the interpolation between two checkpoints),"
                      " shifted to min 0.", lambda: plots.plot_landscape_1d(one_d))
    report.figure(sec, "trajectory_polar", "Training trajectories (polar)",
                  "Each training snapshot's position in the PCA plane of its run in polar "
                  "coordinates (Fig. 1b); needs landscapes with directions: pca.",
                  lambda: plots.plot_trajectory_polar(final_epochs(_need(ls, "landscape"))))


def _random_first(group: tuple[str, str, pd.DataFrame]) -> bool:
    """Sort key: random-direction landscapes (the paper's Fig. 1a) before PCA planes."""
    grid = group[2]
    return "directions" in grid.columns and str(grid["directions"].iloc[0]) != "random"


def _dims(grid: pd.DataFrame) -> int:
    if "dims" in grid.columns:
        return int(grid["dims"].iloc[0])
    return 2 if "b" in grid.columns and grid["b"].notna().any() else 1


def _hessian(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("Hessian", "Eigenvalues of the Hessian of the training objective "
                         "(Fig. 1c, 4).")
    hs = f.get("hessian")
    report.table(sec, "hessian_stats", "Hessian eigenvalue statistics",
                 "Pooled top eigenvalues per model, data regime and end (`pooled` says which "
                 "rows of each unit: the paper's are the top-5 by |λ|; with which: both the "
                 "largest and the smallest are apart): NEP = P(λ<0) (non-convexity), "
                 "APE = E[λ | λ>0] (sharpness), quantiles, extremes, the mean Hutchinson trace "
                 "of the measured objective and of the NLL alone (trace_nll: the penalty's "
                 "weight_decay · I part taken out).",
                 lambda: tables.hessian_stats(_need(hs, "hessian")))
    report.figure(sec, "hessian_spectra", "Top-eigenvalue spectra",
                  "Density (log scale) of the pooled top eigenvalues of every minibatch's "
                  "Hessian, one histogram per model and end (Fig. 4 style); each legend "
                  "entry says which rows of each unit it pools, e.g. top-5 by |λ| (the "
                  "paper's), or with which: both the largest and the smallest apart.",
                  lambda: plots.plot_hessian_spectra(_need(hs, "hessian")))
    report.figure(sec, "hessian_density", "Spectral densities",
                  "SLQ estimates of the whole spectrum's density, one curve per unit.",
                  lambda: plots.plot_hessian_density(_need(hs, "hessian")))


def _representations(report: Report, f: dict[str, pd.DataFrame]) -> None:
    sec = report.section("Feature maps", "Per-block analyses of the feature maps (Fig. 2a, 8, "
                         "9) and lesions of each training run's last checkpoint; shaded bands "
                         "are MSA blocks.")
    fo, fv, le = (None if df is None else final_epochs(df)
                  for df in (f.get("fourier"), f.get("featvar"), f.get("lesion")))
    report.figure(sec, "fourier_depth", "Fourier: high-frequency amplitude vs depth",
                  "Δ log amplitude at frequency π of each block's feature map vs normalized "
                  "depth (Fig. 8); MSAs lower it (low-pass), Convs raise it (high-pass).",
                  lambda: plots.plot_fourier_depth(_need(fo, "fourier")))
    report.figure(sec, "fourier_spectra", "Fourier: Δ log amplitude vs frequency",
                  "Relative log amplitude of every block's feature map from 0 to π; darker "
                  "curves are later blocks.",
                  lambda: plots.plot_fourier_spectra(_need(fo, "fourier")))
    report.figure(sec, "featvar", "Feature-map variance vs depth",
                  "Feature-map variance of each block vs normalized depth (Fig. 9).",
                  lambda: plots.plot_featvar(_need(fv, "featvar")))
    report.figure(sec, "lesion", "Lesion study",
                  "Accuracy drop when one residual block's branch is skipped.",
                  lambda: plots.plot_lesion(_need(le, "lesion")))


def _failures(report: Report, store: Store, results: str, sweeps: list[str]) -> None:
    failed = [s for s in sweeps if store.unit_ids(s, "_failures")]
    if not failed:
        return
    sec = report.section("Failures", "Units whose latest attempt raised; full tracebacks: "
                         "harness.load(results, task='_failures').")
    df = load(results, task="_failures", sweep=failed)
    for (sweep, task), rows in df.groupby(["sweep", "failed_task"], sort=True):
        items = "".join(f"<li><code>{_e(r.unit_id)}</code> {_e(r.error_type)}: "
                        f"{_e(str(r.message)[:300])}</li>" for r in rows.head(10).itertuples())
        more = f"<p>… and {len(rows) - 10} more</p>" if len(rows) > 10 else ""
        report.note(sec, f"{sweep}/{task}: {len(rows)} failed", f"<ul>{items}</ul>{more}")


def _provenance(report: Report, store: Store, sweeps: list[str]) -> None:
    sec = report.section("Provenance", "What produced each sweep's results: the latest run's "
                         "spec, software versions, host, start time and command.")
    for sweep in sweeps:
        m = store.read_manifest(sweep)
        if m is None:
            report.note(sec, f"sweep {sweep}", "<p class='missing'>no _sweep.json</p>")
            continue
        versions = ", ".join(f"{k} {v}" for k, v in sorted((m.get("versions") or {}).items()))
        argv = " ".join(str(a) for a in m.get("argv") or [])
        spec = json.dumps(m.get("spec"), indent=2, sort_keys=True, default=str)
        report.note(sec, f"sweep {sweep}",
                    f"<dl><dt>started</dt><dd>{_e(m.get('started_at', '?'))}</dd>"
                    f"<dt>host</dt><dd>{_e(m.get('host', '?'))}</dd>"
                    f"<dt>versions</dt><dd>{_e(versions or '?')}</dd>"
                    f"<dt>command</dt><dd><code>{_e(argv or '?')}</code></dd></dl>"
                    f"<details><summary>spec</summary><pre>{_e(spec)}</pre></details>")


def _need(df: pd.DataFrame | None, task: str) -> pd.DataFrame:
    if df is None or not len(df):
        raise NoData(f"no results of the {task} task")
    return df


# --------------------------------------------------------------------------- page


CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;padding:0 1em;color:#222}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.item{margin:1.2em 0}.caption{color:#555;font-size:.9em;margin:.3em 0}
img{max-width:100%;height:auto;border:1px solid #eee}
.tbl{border-collapse:collapse;font-size:.85em}.tbl td,.tbl th{border:1px solid #ddd;
padding:2px 6px;text-align:right}.scroll{overflow-x:auto}
.missing{color:#8a6d3b;background:#fcf8e3;padding:.3em .6em}
pre.error{color:#a94442;background:#f2dede;padding:.5em;white-space:pre-wrap}
pre{background:#f7f7f7;padding:.5em;overflow-x:auto}dt{font-weight:bold}
dd,code,li{overflow-wrap:anywhere}
.files a{margin-right:.8em;font-size:.85em}
.read{font-size:.9em;margin:.3em 0;border-left:3px solid #9ab;padding-left:.5em}
.claims td,.claims th{text-align:left;vertical-align:top}
.claims td:nth-child(1){min-width:16em}.claims td:nth-child(3){min-width:16em}
.v-supported{color:#1b5e20;font-weight:bold}.v-not-supported{color:#b71c1c;font-weight:bold}
.v-not-measured{color:#8a6d3b}
"""


def _render(report: Report, results: str, sweeps: list[str], pending: list[str]) -> str:
    now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    missing = [i.title for s in report.sections for i in s.items if i.state == "missing"]
    errors = [i.title for s in report.sections for i in s.items if i.state == "error"]
    head = [(f"<p>Results <code>{_e(results)}</code>, sweeps {_e(', '.join(sweeps))}; "
            f"rendered {_e(now)}.</p>")]
    if pending:
        head.append("<p class='missing'>Partial results: " + _e("; ".join(pending)) + ".</p>")
    if missing:
        head.append("<p class='missing'>No data for: " + _e(", ".join(missing)) + ".</p>")
    if errors:
        head.append("<p class='missing'>Failed to render: " + _e(", ".join(errors)) + ".</p>")
    toc = "".join(f"<li><a href='#s{i}'>{_e(s.title)}</a></li>"
                  for i, s in enumerate(report.sections))
    body = []
    for i, sec in enumerate(report.sections):
        body.append(f"<h2 id='s{i}'>{_e(sec.title)}</h2>")
        if sec.intro:
            body.append(f"<p>{_e(sec.intro)}</p>")
        for item in sec.items:
            files = "".join(f"<a href='{_e(p)}'>{_e(Path(p).suffix[1:].upper())}</a>"
                            for p in item.files)
            body.append(f"<div class='item'><h3>{_e(item.title)}</h3>{item.body}"
                        + (f"<p class='caption'>{_e(item.caption)}</p>" if item.caption else "")
                        + (f"<p class='read'>How to read: {_e(item.read)}</p>" if item.read
                           else "")
                        + (f"<p class='files'>{files}</p>" if files else "") + "</div>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            "<link rel='icon' href='data:,'>"
            f"<title>harness report: {_e(', '.join(sweeps))}</title><style>{CSS}</style></head>"
            f"<body><h1>harness report</h1>{''.join(head)}<ul>{toc}</ul>{''.join(body)}"
            "</body></html>\n")


def write_report(results: str, out: str | Path, sweeps: list[str] | None = None) -> Path:
    """Render every table and plot the results under `results` allow into `out`/index.html.

    `sweeps` limits the page to those sweeps (default: all under `results`);
    train rows of every sweep are still read to join checkpoints to their
    training runs. Returns the path of index.html.
    """
    from harness.engine.spec import SpecError

    store = Store(results)
    available = store.sweeps()
    chosen = list(dict.fromkeys(sweeps)) if sweeps else available
    unknown = [s for s in chosen if s not in available]
    if unknown or not chosen:
        raise SpecError([f"--sweep {', '.join(unknown)}: not under {results!r}; sweeps there: "
                         f"{', '.join(available) or 'none'}" if unknown else
                         f"no sweeps under {results!r}: run one first (harness run SWEEP "
                         f"--results {results})"])
    out = Path(out)
    for sub in ("plots", "tables"):  # stale files of an earlier report must not linger
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    print(f"report: {len(chosen)} sweep(s) from {results} -> {out}", file=sys.stderr, flush=True)
    frames = _load_all(results, chosen)
    report = Report(out)
    pending = _overview(report, store, chosen)
    _claims(report, frames)
    _models(report, frames)
    _robustness(report, frames)
    _landscapes(report, frames)
    _hessian(report, frames)
    _representations(report, frames)
    _failures(report, store, results, chosen)
    _provenance(report, store, chosen)
    index = out / "index.html"
    index.write_text(_render(report, results, chosen, pending), encoding="utf-8")
    print(f"report: wrote {index} ({report.count} items, "
          f"{time.perf_counter() - report.started:.1f}s)", file=sys.stderr, flush=True)
    return index
