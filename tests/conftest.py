"""Shared fixtures: tiny sweeps on bundled data, and one Ray instance per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

SMALL_RESNET = {"model": "resnet18", "model_args": {"width": 8, "layers": [1, 1, 1, 1]}}
SMALL_VIT = {"model": "vit_ti", "model_args": {"embed_dim": 48, "depth": 2, "num_heads": 3,
                                               "patch_size": 4}}
#: Columns that legitimately differ between two runs of the same unit.
RUN_FACTS = ["host", "node_id", "device", "attempt", "duration_s", "finished_at", "pid"]


def tiny_eval_doc(name: str, seeds: list[int] = (0, 1), **extra: Any) -> dict[str, Any]:
    """A sweep of the evaluate task on two small models: 2 models x len(seeds) units."""
    common = {"dataset": "digits", "max_samples": 96, "seed": list(seeds), **extra}
    return {"name": name,
            "tasks": {"evaluate": [{**SMALL_RESNET, **common}, {**SMALL_VIT, **common}]}}


def write_sweep(path: Path, doc: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(doc))
    return path


def comparable(df, sort_by: str = "unit_id"):
    """A result frame without the run facts, rows in a fixed order."""
    keep = [c for c in df.columns if c not in RUN_FACTS]
    return df[keep].sort_values(sort_by).reset_index(drop=True)


@pytest.fixture(scope="session")
def ray_session():
    """One embedded Ray for the in-process tests (the executor reuses it)."""
    import ray

    from harness.engine.executor import RunConfig
    from harness.engine.ray_pool import ensure_ray

    ensure_ray(RunConfig(kind="ray", workers=2))
    yield ray
    ray.shutdown()


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[int]:
    """Counts calls of torch's fused scaled_dot_product_attention from here on."""
    import torch

    calls: list[int] = []
    real = torch.nn.functional.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    return calls


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run with the temp dir as cwd, so a stray default results/ would show up there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def harness_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env
