"""The paper's claims, each checked against the results at hand.

Park & Kim (2022) make comparative claims: ViTs against ResNets, MSA blocks
against Conv blocks, small data against large. Each `Check` below states one
claim in a line, computes the numbers that decide it from whatever rows the
results hold, and returns a verdict computed from those numbers — never
written in:

- "supported": the numbers go the way the paper says;
- "not supported": they go the other way (or are equal);
- "not measured": the rows needed are missing (no ViT, one data size, …);
  the verdict names the sweep that would measure it.

Models are grouped by family from their `model` name (`family`): plain ViTs
(vit, deit) against ResNets (resnet, resnext, wrn). Per-block claims use the block kinds of the
decomposition (msa, conv, mlp). Unless a claim says otherwise, each training
run contributes its last checkpoint (`frames.final_epochs`); the Hessian
claims use each run's first checkpoint, the end of warmup where the paper
measures. Family comparisons use the largest training-data fraction both
families were trained on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from harness.analysis.hessian import nep_ape
from harness.report.frames import final_epochs, metrics_rows, run_epoch_rows

SUPPORTED, NOT_SUPPORTED, NOT_MEASURED = "supported", "not supported", "not measured"
VIT, CNN = "ViT", "ResNet"
#: Name fragments of each family (`timm:` prefixes are ignored). The claims are about plain
#: ViTs against ResNets: PiT and Swin (pooling, local windows: the paper reports they behave
#: differently) and VGG-like CNNs are in neither.
FAMILIES = {VIT: ("vit", "deit"), CNN: ("resnet", "resnext", "wrn")}
#: Where each kind of evidence comes from: the demo's sweep, then the paper's.
SWEEPS = {
    "hessian": "demo_hessian (digits) or paper_hessian (CIFAR-100)",
    "landscape": "demo_landscape (digits) or landscape_demo",
    "fourier": "demo_features (digits)",
    "featvar": "demo_features (digits)",
    "lesion": "demo_features (digits)",
    "freqnoise": "demo_robustness (digits) or paper_robustness (CIFAR-100)",
    "corruption": "demo_robustness (digits) or paper_robustness (CIFAR-100-C)",
    "evaluate": "demo_train + demo (digits) or paper_cifar100_train",
}


@dataclass(frozen=True)
class Verdict:
    """One claim's outcome: the numbers found and what they say."""

    claim: str
    paper: str
    evidence: str
    verdict: str


class Unmeasured(Exception):
    """The rows a claim needs are not in the results; the message says which."""


@dataclass(frozen=True)
class Check:
    claim: str
    paper: str
    task: str
    decide: Callable[[dict[str, pd.DataFrame]], tuple[str, bool]]

    def run(self, frames: dict[str, pd.DataFrame]) -> Verdict:
        try:
            evidence, holds = self.decide(frames)
        except Unmeasured as exc:
            return Verdict(self.claim, self.paper, f"{exc}; measure with {SWEEPS[self.task]}",
                           NOT_MEASURED)
        return Verdict(self.claim, self.paper, evidence, SUPPORTED if holds else NOT_SUPPORTED)


# --------------------------------------------------------------------------- row selection


def family(model: str) -> str | None:
    """ViT, ResNet or None (hybrids such as AlterNet, MLP-Mixer, anything unknown)."""
    name = str(model).lower().removeprefix("timm:")
    if "alternet" in name:
        return None
    for fam, parts in FAMILIES.items():
        if any(p in name for p in parts):
            return fam
    return None


def _rows(frames: dict[str, pd.DataFrame], task: str, columns: tuple[str, ...] = ()
          ) -> pd.DataFrame:
    df = frames.get(task)
    if df is None or not len(df):
        raise Unmeasured(f"no {task} rows")
    missing = [c for c in ("model", *columns) if c not in df.columns]
    if missing:
        raise Unmeasured(f"{task} rows lack {', '.join(missing)}")
    return df.assign(family=df["model"].map(family))


def _first_epochs(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of each training run's earliest checkpoint (untrained rows are kept)."""
    return run_epoch_rows(df, "min")


def _fraction(df: pd.DataFrame) -> pd.Series | None:
    if "train_fraction" in df.columns and df["train_fraction"].notna().any():
        return df["train_fraction"]
    return None


def _matched(df: pd.DataFrame, families: tuple[str, ...] = (VIT, CNN)
             ) -> tuple[pd.DataFrame, str]:
    """Rows of `families`, at the largest training-data fraction all of them have."""
    rows = df[df["family"].isin(families)]
    absent = [f for f in families if not (rows["family"] == f).any()]
    if absent:
        raise Unmeasured(f"no {' or '.join(absent)} rows")
    frac = _fraction(rows)
    if frac is None:
        return rows, ""
    common = set.intersection(*(set(frac[rows["family"] == f].dropna()) for f in families))
    if not common:
        return rows, ""
    best = max(common)
    return rows[frac == best], f" ({best:.0%} data)"


def _per_family(rows: pd.DataFrame, value: Callable[[pd.DataFrame], float],
                families: tuple[str, ...] = (VIT, CNN)) -> dict[str, float]:
    out = {f: value(rows[rows["family"] == f]) for f in families}
    bad = [f for f, v in out.items() if not np.isfinite(v)]
    if bad:
        raise Unmeasured(f"no value for {' or '.join(bad)}")
    return out


def _g(x: float) -> str:
    return f"{x:.3g}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


# --------------------------------------------------------------------------- Hessian


def _eigenvalues(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = _rows(frames, "hessian", ("quantity", "value"))
    rows = rows[rows["quantity"] == "eigenvalue"]
    if not len(rows):
        raise Unmeasured("no hessian eigenvalue rows")
    return _first_epochs(rows)


def _nep_vit_vs_cnn(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows, where = _matched(_eigenvalues(frames))
    nep = _per_family(rows, lambda r: nep_ape(r["value"])["nep"])
    return (f"NEP {VIT} {_g(nep[VIT])} vs {CNN} {_g(nep[CNN])}{where}",
            nep[VIT] > nep[CNN])


def _ape_vit_vs_cnn(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows, where = _matched(_eigenvalues(frames))
    ape = _per_family(rows, lambda r: nep_ape(r["value"])["ape"])
    return (f"APE {VIT} {_g(ape[VIT])} vs {CNN} {_g(ape[CNN])}{where}",
            ape[CNN] > ape[VIT])


def _small_vs_large(rows: pd.DataFrame, fam: str) -> tuple[pd.DataFrame, pd.DataFrame, float,
                                                             float]:
    """`fam`'s rows at its smallest and largest training-data fraction."""
    own = rows[rows["family"] == fam]
    frac = _fraction(own)
    if frac is None or frac.nunique() < 2:
        raise Unmeasured(f"{fam} rows of one training-data size only")
    lo, hi = float(frac.min()), float(frac.max())
    return own[frac == lo], own[frac == hi], lo, hi


def _data_suppresses_nep(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    small, large, lo, hi = _small_vs_large(_eigenvalues(frames), VIT)
    a, b = nep_ape(small["value"])["nep"], nep_ape(large["value"])["nep"]
    return f"{VIT} NEP {_g(a)} on {lo:.0%} data vs {_g(b)} on {hi:.0%}", a > b


# --------------------------------------------------------------------------- landscape


def _landscape_rise(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    from harness.report.tables import NoData, landscape_summary

    rows = _rows(frames, "landscape", ("a",))
    if "directions" in rows.columns:
        rows = rows[rows["directions"].fillna("random") == "random"]
    if not len(rows):
        raise Unmeasured("no landscape rows with random directions")
    try:
        summary = landscape_summary(final_epochs(rows))
    except NoData as exc:
        raise Unmeasured(str(exc)) from exc
    summary = summary.assign(family=summary["model"].map(family))
    if "train_fraction" not in summary.columns and "train_fraction" in rows.columns:
        fracs = rows["train_fraction"].dropna().unique()
        if len(fracs) == 1:
            summary["train_fraction"] = fracs[0]
    summary, where = _matched(summary)
    rise = _per_family(summary, lambda r: float(r["mean_rise"].mean()))
    return (f"mean rise of the loss within radius 0.5: {VIT} {_g(rise[VIT])} vs "
            f"{CNN} {_g(rise[CNN])}{where}", rise[VIT] < rise[CNN])


# --------------------------------------------------------------------------- per block


_STAGE = re.compile(r"^(.*?)\.?\d+(?:\.[A-Za-z_]\w*)?$")


def stage_of(block_name: str) -> str:
    """The stage a block belongs to, from its name: the path before its index.

    "layer1.0" -> "layer1", "stages.2.blocks.1" -> "stages.2.blocks",
    "blocks.3.attn" -> "blocks"; a name without an index is its own stage.
    """
    match = _STAGE.match(str(block_name))
    return match.group(1) if match and match.group(1) else str(block_name)


def _instance_keys(df: pd.DataFrame) -> list[str]:
    return [c for c in ("model", "model_args", "checkpoint", "seed", "definition", "diagonal",
                        "max_samples") if c in df.columns]


def block_changes(df: pd.DataFrame, value: str, log: bool = False) -> pd.DataFrame:
    """Per model instance, how much each block changes `value` from the block before it.

    Rows: one per (instance, block) with a predecessor; columns family, block_kind,
    change = value(block) − value(previous block) (of the logs when `log`).
    """
    keys = _instance_keys(df)
    per = df.groupby([*keys, "block_index", "block_kind"], dropna=False, as_index=False)[
        value].mean()
    per = per.sort_values([*keys, "block_index"])
    x = np.log(per[value].where(per[value] > 0)) if log else per[value]
    per["change"] = x.groupby([per[k].astype(str) for k in keys]).diff()
    per["family"] = per["model"].map(family)
    return per[per["change"].notna()]


def _kind_change(changes: pd.DataFrame, kind: str) -> tuple[float, int]:
    sel = changes.loc[changes["block_kind"] == kind, "change"]
    if not len(sel):
        raise Unmeasured(f"no {kind} blocks")
    return float(sel.mean()), len(sel)


def _fourier_changes(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = _rows(frames, "fourier", ("is_max_frequency", "block_index", "block_kind",
                                     "delta_log_amplitude"))
    rows = final_epochs(rows[rows["is_max_frequency"].astype(bool)])
    return block_changes(rows, "delta_log_amplitude")


def _msa_low_pass(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    mean, n = _kind_change(_fourier_changes(frames), "msa")
    return (f"an MSA block changes Δ log amplitude at π by {_g(mean)} on average "
            f"({n} blocks)", mean < 0)


def _conv_high_pass(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    mean, n = _kind_change(_fourier_changes(frames), "conv")
    return (f"a Conv block changes Δ log amplitude at π by {_g(mean)} on average "
            f"({n} blocks)", mean > 0)


def _featvar_changes(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = _rows(frames, "featvar", ("block_index", "block_kind", "variance"))
    if "definition" in rows.columns:
        rows = rows[rows["definition"].fillna("spatial") == "spatial"]
    return block_changes(final_epochs(rows), "variance", log=True)


def _msa_reduce_variance(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    mean, n = _kind_change(_featvar_changes(frames), "msa")
    return (f"an MSA block multiplies the feature-map variance by {np.exp(mean):.3f} on "
            f"average ({n} blocks)", mean < 0)


def _conv_mlp_increase_variance(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    changes = _featvar_changes(frames)
    found, parts, holds = 0, [], True
    for kind in ("conv", "mlp"):
        try:
            mean, n = _kind_change(changes, kind)
        except Unmeasured:
            continue
        found += 1
        parts.append(f"{'an MLP' if kind == 'mlp' else 'a Conv'} block × {np.exp(mean):.3f}"
                     f" ({n} blocks)")
        holds = holds and mean > 0
    if not found:
        raise Unmeasured("no conv or mlp blocks")
    return "feature-map variance: " + "; ".join(parts), holds


def _lesion_position(frames: dict[str, pd.DataFrame], kind: str, last: bool
                     ) -> tuple[str, bool]:
    """Whether, in each stage with ≥ 2 lesioned `kind` blocks, the block whose removal
    costs the most accuracy is the stage's last (`last`) or first one."""
    rows = _rows(frames, "lesion", ("block_index", "block_kind", "block_name", "acc_drop"))
    rows = final_epochs(rows[rows["block_kind"] == kind])
    keys = _instance_keys(rows)
    per = rows.groupby([*keys, "block_index", "block_name"], dropna=False, as_index=False)[
        "acc_drop"].mean()
    per["stage"] = per["block_name"].map(stage_of)
    hits, stages, worst = 0, 0, []
    for _, g in per.groupby([*(per[k].astype(str) for k in keys), per["stage"]]):
        if len(g) < 2:
            continue
        stages += 1
        g = g.sort_values("block_index")
        top = g.loc[g["acc_drop"].idxmax()]
        end = g.iloc[-1] if last else g.iloc[0]
        hits += int(top["block_index"] == end["block_index"])
        worst.append(f"{top['model']} {top['block_name']} −{_pct(top['acc_drop'])}")
    if not stages:
        raise Unmeasured(f"no stage with two or more lesioned {kind} blocks")
    where = "last" if last else "first"
    shown = ", ".join(worst[:3]) + (", …" if len(worst) > 3 else "")
    return (f"the {where} {kind} block of its stage hurts most in {hits} of {stages} stages "
            f"(largest drops: {shown})", hits * 2 > stages)


# --------------------------------------------------------------------------- robustness


def _freq_drop(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = _rows(frames, "freqnoise", ("frequency", "acc_drop"))
    rows, _ = _matched(final_epochs(rows))
    return rows


def _band(rows: pd.DataFrame, fam: str, lo: float, hi: float) -> float:
    sel = rows[(rows["family"] == fam) & rows["frequency"].between(lo, hi)]
    return float(sel["acc_drop"].mean()) if len(sel) else float("nan")


LOW, HIGH = (0.1, 0.5), (0.6, 1.0)


def _vit_robust_high(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows = _freq_drop(frames)
    drop = {fam: _band(rows, fam, *HIGH) for fam in (VIT, CNN)}
    if not all(np.isfinite(v) for v in drop.values()):
        raise Unmeasured(f"no frequency-noise rows at {HIGH[0]:g}–{HIGH[1]:g}π for both")
    return (f"mean accuracy drop under noise at {HIGH[0]:g}–{HIGH[1]:g}π: {VIT} "
            f"{_pct(drop[VIT])} vs {CNN} {_pct(drop[CNN])}", drop[VIT] < drop[CNN])


def _vit_low_vs_high(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows = _freq_drop(frames)
    low, high = _band(rows, VIT, *LOW), _band(rows, VIT, *HIGH)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise Unmeasured(f"no {VIT} frequency-noise rows in both bands")
    return (f"{VIT} accuracy drop at {LOW[0]:g}–{LOW[1]:g}π {_pct(low)} vs at "
            f"{HIGH[0]:g}–{HIGH[1]:g}π {_pct(high)}", low > high)


def _corruption(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows = _rows(frames, "corruption", ("acc",))
    rows, where = _matched(final_epochs(rows))
    acc = _per_family(rows, lambda r: float(r["acc"].mean()))
    return (f"robustness (mean accuracy over corruptions): {VIT} {_pct(acc[VIT])} vs "
            f"{CNN} {_pct(acc[CNN])}{where}", acc[CNN] > acc[VIT])


def _vit_needs_data(frames: dict[str, pd.DataFrame]) -> tuple[str, bool]:
    rows = _rows(frames, "evaluate", ("acc",))
    rows = final_epochs(metrics_rows(rows))
    loss = {}
    for fam in (VIT, CNN):
        small, large, lo, hi = _small_vs_large(rows, fam)
        loss[fam] = float(large["acc"].mean() - small["acc"].mean())
    return (f"accuracy lost from {hi:.0%} to {lo:.0%} data: {VIT} {_pct(loss[VIT])} vs "
            f"{CNN} {_pct(loss[CNN])}", loss[VIT] > loss[CNN])


# --------------------------------------------------------------------------- the list


CHECKS: tuple[Check, ...] = (
    Check("ViTs have negative Hessian eigenvalues, ResNets hardly any: NEP = P(λ<0) is "
          "higher for ViT", "Fig. 1c, 4: ViT λ ≈ −100…100, ResNet ≈ 200…800", "hessian",
          _nep_vit_vs_cnn),
    Check("Large data suppresses ViT's negative eigenvalues: NEP falls with more training "
          "data", "Fig. 4: ViT on 6% of CIFAR-100 has more negative mass", "hessian",
          _data_suppresses_nep),
    Check("ResNets are sharper than ViTs: the average positive eigenvalue (APE) is larger",
          "Fig. 4: ResNet λ ≈ 200…800", "hessian", _ape_vit_vs_cnn),
    Check("ViT's loss landscape is flatter around its minimum than ResNet's",
          "Fig. 1a", "landscape", _landscape_rise),
    Check("MSAs are low-pass filters: an MSA block lowers the high-frequency amplitude",
          "Fig. 2a, 8", "fourier", _msa_low_pass),
    Check("Convs are high-pass filters: a Conv block raises the high-frequency amplitude",
          "Fig. 8: ResNet ≈ −6.5 at the stem rising to ≈ −1", "fourier", _conv_high_pass),
    Check("ViTs are more robust to high-frequency noise than ResNets",
          "Fig. 2b: ResNet loses ≈15% at 0.9π, ViT ≈4.5% at 0.8π", "freqnoise",
          _vit_robust_high),
    Check("ViTs are hurt more by low-frequency noise than by high-frequency noise",
          "Fig. 2b: ViT loses ≈15% at 0.3π, ≈4.5% at 0.8π", "freqnoise", _vit_low_vs_high),
    Check("MSAs reduce the feature-map variance", "Fig. 9", "featvar", _msa_reduce_variance),
    Check("Convs and MLPs increase the feature-map variance", "Fig. 9", "featvar",
          _conv_mlp_increase_variance),
    Check("MSAs at the end of a stage matter most: removing them costs the most accuracy",
          "lesion study", "lesion", lambda f: _lesion_position(f, "msa", last=True)),
    Check("Convs at the start of a stage matter most: removing them costs the most accuracy",
          "lesion study", "lesion", lambda f: _lesion_position(f, "conv", last=False)),
    Check("ViTs need more data: less training data costs ViT more accuracy than ResNet",
          "data-size regimes", "evaluate", _vit_needs_data),
    Check("On CIFAR-scale data ResNets are more robust to corruptions than ViTs",
          "Fig. 12: CIFAR-100-C robustness ResNet ≈65%, ViT ≈52%", "corruption",
          _corruption),
)


def check_claims(frames: dict[str, pd.DataFrame]) -> list[Verdict]:
    """Every claim of `CHECKS` against `frames` (task -> rows joined with training)."""
    return [check.run(frames) for check in CHECKS]


def claims_table(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """`check_claims` as a frame: claim, paper, evidence (the numbers), verdict."""
    return pd.DataFrame([vars(v) for v in check_claims(frames)],
                        columns=["claim", "paper", "evidence", "verdict"])
