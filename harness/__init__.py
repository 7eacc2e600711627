"""Distributed harness for Hessian and loss-landscape analysis of vision models.

Importing `harness` is light: `harness.load` (read results), `harness.run` (run a sweep) and the
rest of the public API load the engine on first use, so `import harness.analysis.hessian` from a notebook pulls in neither the sweep
machinery nor Ray.
"""

import os
import sys
from typing import Any

#: The package version, written only here (pyproject.toml reads it; rows add the git commit:
#: harness.engine.provenance.code_version).
__version__ = "0.2.0"

# Ray token authentication on before anything imports Ray (it reads its config at import): a
# driver joining a cluster does not switch it on by itself (Ray 2.60) and a token-auth cluster
# refuses it; an embedded local Ray has it on by default anyway. An explicit RAY_AUTH_MODE is
# kept, and "disabled" is refused when a sweep starts (harness.engine.ray_pool.ensure_ray). Once
# Ray is imported its config is fixed: changing the variable then would split the driver (old
# mode) from the processes it spawns (new mode), so a late import leaves it alone.
if "ray" not in sys.modules:
    os.environ.setdefault("RAY_AUTH_MODE", "token")

#: public name -> module that defines it, imported on first access
_PUBLIC = {"load": "harness.engine.store", "run": "harness.engine.api"}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        import importlib

        value = getattr(importlib.import_module(_PUBLIC[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'harness' has no attribute {name!r}")
