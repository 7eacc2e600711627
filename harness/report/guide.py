"""One line per figure of the report on how to read it (shown under the figure).

Keyed by the figure's file name; numbered figures (`landscape_contour_3`) share
the line of their stem. `how_to_read` raises KeyError for a figure without a
line, so a new figure cannot reach the page unexplained.
"""

from __future__ import annotations

import re

READ: dict[str, str] = {
    "reliability": "Bars below the dashed diagonal mean overconfidence (accuracy lower than "
                   "confidence), bars above it underconfidence; empty bins have no bar.",
    "data_size": "The steeper a line rises from left to right, the more that architecture "
                 "depends on the amount of training data.",
    "training": "Left: the loss should fall steadily; right: the vertical gap between two "
                "lines is their difference in test accuracy at that epoch.",
    "robustness_severity": "The height at severity 0 is the clean accuracy; the steeper a "
                           "line falls, the less robust the model to corruptions.",
    "freqnoise": "Higher means more accuracy lost; the frequency where a curve peaks is the "
                 "one the model is most vulnerable to.",
    "landscape_contour": "Tightly packed contours mean a sharp basin, wide rings a flat one; "
                         "the colors are the loss above the grid's minimum.",
    "landscape_surface": "A narrow, steep bowl is a sharp minimum, a wide, shallow one a flat "
                         "minimum; bumps and saddles are non-convexity.",
    "landscape_1d": "The narrower and steeper a curve is around 0, the sharper the minimum.",
    "trajectory_polar": "One line per training run, from its first snapshot to the final "
                        "weights at the center: the radius is the distance in the PCA plane.",
    "hessian_spectra": "Mass left of the vertical line at 0 is negative eigenvalues "
                       "(non-convexity, NEP); the further right the tail, the sharper (APE). "
                       "Read NEP off the top-k by |λ| curves: a \"smallest\" curve holds "
                       "the most negative eigenvalues by construction.",
    "hessian_density": "Most eigenvalues sit near 0; tails reaching further out, on either "
                       "side, mean larger curvature (negative: non-convex directions).",
    "fourier_depth": "A fall across a shaded MSA block means it removes high frequencies "
                     "(low-pass); a rise across a Conv block means it amplifies them.",
    "fourier_spectra": "Every curve starts at 0; the lower it ends at π, the less "
                       "high-frequency content that block's feature map keeps.",
    "featvar": "A fall across a shaded MSA block means the MSA reduces the variance; a rise "
               "across a Conv or MLP block means it increases it (log scale).",
    "lesion": "The higher a point, the more accuracy the model loses without that block: "
              "the blocks it relies on most.",
}


def how_to_read(name: str) -> str:
    """The reading line of the figure saved as `name` (a trailing _<n> is ignored)."""
    return READ[re.sub(r"_\d+$", "", name)]
