"""Distributed harness for Hessian and loss-landscape analysis of vision models."""

import os
import sys

__version__ = "0.1.0"

# Ray token authentication on before anything imports Ray (it reads its config at import): a
# driver joining a cluster does not switch it on by itself (Ray 2.60) and a token-auth cluster
# refuses it; an embedded local Ray has it on by default anyway. An explicit RAY_AUTH_MODE is
# kept, and "disabled" is refused when a sweep starts (harness.ray_pool.ensure_ray). Once Ray
# is imported its config is fixed: changing the variable then would split the driver (old mode)
# from the processes it spawns (new mode), so a late import leaves it alone.
if "ray" not in sys.modules:
    os.environ.setdefault("RAY_AUTH_MODE", "token")

from harness.store import load  # noqa: E402  (public read API)

__all__ = ["load", "__version__"]
