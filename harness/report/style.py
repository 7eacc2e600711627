"""One color per architecture, the same in every plot of every report.

The paper's architectures get fixed colors (CNN families in blues/greens,
transformers in reds/oranges, hybrids in purple); any other model name
(`timm:<name>`) gets a color from a fallback palette chosen by a stable hash
of its name, so it too keeps its color across runs and reports. Variants of
one architecture (model args, data fractions, epochs) share its color and
differ by line style.
"""

from __future__ import annotations

import hashlib

ARCH_COLORS: dict[str, str] = {
    "resnet18": "#1f77b4",
    "resnet50": "#174a7e",
    "resnext50": "#4c9bd6",
    "preact_resnet18": "#17becf",
    "preact_resnet50": "#0e7c87",
    "wrn28_10": "#2ca02c",
    "vgg16": "#8c564b",
    "preact_vgg16": "#c49c94",
    "alexnet": "#7f7f7f",
    "vit_ti": "#d62728",
    "pit_ti": "#ff7f0e",
    "swin_ti": "#e377c2",
    "mixer": "#bcbd22",
    "alternet": "#9467bd",
}
FALLBACK = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d",
            "#31a354", "#756bb1", "#636363")
LINESTYLES = ("-", "--", ":", "-.", (0, (5, 1)), (0, (3, 1, 1, 1, 1, 1)))
MARKERS = ("o", "s", "^", "D", "v", "P")
MSA_SHADE = "#f2c6c6"
DPI = 110


def color(model: str) -> str:
    """The color of an architecture (a `model` name)."""
    if model in ARCH_COLORS:
        return ARCH_COLORS[model]
    digest = int(hashlib.sha256(model.encode()).hexdigest(), 16)
    return FALLBACK[digest % len(FALLBACK)]


def variant_styles(pairs: list[tuple[str, str]]) -> dict[str, dict]:
    """Line style per (label, model): the color of the model, a new dash per variant of it."""
    seen: dict[str, int] = {}
    styles = {}
    for label, model in pairs:
        i = seen.get(model, 0)
        seen[model] = i + 1
        styles[label] = {"color": color(model), "linestyle": LINESTYLES[i % len(LINESTYLES)],
                         "marker": MARKERS[i % len(MARKERS)]}
    return styles
