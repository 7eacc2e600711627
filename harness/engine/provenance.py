"""What code produced a result: the package version, the git commit, the libraries, CUDA.

Rows carry `code_version()` in their `harness_version` column (per process: on a cluster each
worker reports its own checkout); each run of a sweep stores `environment()` in its run record.
"""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

from harness import __version__

_PACKAGE_DIR = Path(__file__).resolve().parents[1]  # harness/


@functools.lru_cache(maxsize=1)
def git_state() -> tuple[str, bool] | None:
    """(commit, dirty) of the checkout holding this package, or None outside a git work tree
    (an installed wheel) or without git. Dirty: tracked files differ from the commit."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(_PACKAGE_DIR), *args], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()

    try:
        if git("rev-parse", "--show-toplevel") != str(_PACKAGE_DIR.parent):
            return None  # the package sits inside some other repository (e.g. a venv in one)
        return git("rev-parse", "HEAD"), bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return None


def code_version() -> str:
    """`0.2.0`, or `0.2.0+g<commit 12>` from a git checkout, `.dirty` appended when tracked
    files were modified (PEP 440 local-version form)."""
    state = git_state()
    if state is None:
        return __version__
    commit, dirty = state
    return f"{__version__}+g{commit[:12]}" + (".dirty" if dirty else "")


def environment() -> dict[str, Any]:
    """Versions of everything that changes numbers: harness (+ git), Python, the libraries,
    CUDA, cuDNN and the GPUs this process sees."""
    import numpy
    import pyarrow
    import ray
    import timm
    import torch

    state = git_state()
    cuda = torch.cuda.is_available()
    return {
        "harness": __version__,
        "code_version": code_version(),
        "git_commit": state[0] if state else None,
        "git_dirty": state[1] if state else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "numpy": numpy.__version__,
        "ray": ray.__version__,
        "pyarrow": pyarrow.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if cuda else [],
    }
