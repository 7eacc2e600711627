"""Large-batch mode: one Hessian operator whose products are data-parallel over Ray actors.

A Hessian of the objective over many samples (a full training set) does not fit
one device's retained graph, and one device computes it slowly. Here each
`ShardActor` holds a shard of the batches and its own copy of the model, built
by the actor itself from a picklable `builder` (so no weights or data travel
through the object store: the builder loads the checkpoint and the dataset
where it runs). A product Hv sends v once (`ray.put`) to every shard, each
returns Σ_{k in shard} (n_k / N) H_k v, and the driver sums them. The driver
side, `ShardedHessian`, has the interface the numerics in `harness.analysis.hessian` use
(n, dtype, device, matvec, matmat, fresh_matvec, hvps), so Lanczos, Hutchinson
and SLQ run on it unchanged; the basis stays on the driver.

A builder may also return a term of the loss that does not depend on the batch (the
objective's penalty): `penalty_operator()` applies its Hessian on shard 0's model copy
alone — one shard suffices, and the driver holds no parameters — with the same driver-side
interface, so Hutchinson runs the same probes through both (the trace of the NLL alone).

Resources: shard actors ask Ray for `num_cpus` / `num_gpus` each, all at once:
their bundles form one placement group, so the shards start together or not at
all, and two units that build operators at the same time never each hold part
of their shards while waiting for the rest. A unit that creates them runs
inside a pool worker, which already holds its own share: leave room for the
shards (e.g. `executor: {workers: 1, num_gpus: 0}` for the units,
`shard_num_gpus: 1` for the shards), or the start times out with a message
saying what was asked for and what is free.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np
import torch

from harness.analysis.hessian import (Batch, HessianOperator, LossFn, batch_free_operator,
                                      explicit_attention)

#: builder(shard, shards, device) -> (model (nn.Module) in eval mode, the shard's batches,
#: loss_fn, per-batch weights n_k / N over all shards[, penalty: a LossFn that ignores its
#: batch])
ShardBuilder = Callable[[int, int, torch.device], tuple[Any, ...]]


class ShardActor:
    """One shard: its model copy (explicit attention), its batches, its HessianOperator."""

    def __init__(self, builder: ShardBuilder, shard: int, shards: int, method: str,
                 num_cpus: float, num_gpus: float) -> None:
        if num_gpus == 0:
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # keep CPU shards off the GPUs
        torch.set_num_threads(max(1, int(num_cpus)))
        device = torch.device("cuda" if num_gpus > 0 and torch.cuda.is_available() else "cpu")
        built = builder(shard, shards, device)
        model, batches, loss_fn, weights = built[:4]
        self._attention = explicit_attention(model)
        self.attention_modules = self._attention.__enter__()  # this copy stays explicit
        self.op = HessianOperator(model, batches, loss_fn, method=method, weights=weights)
        self._penalty_fn: LossFn | None = built[4] if len(built) > 4 else None
        self._penalty: HessianOperator | None = None

    def info(self) -> dict[str, Any]:
        return {"n": self.op.n, "num_samples": self.op.num_samples,
                "dtype": str(self.op.dtype).removeprefix("torch."),
                "names": self.op.flat.names, "shapes": [tuple(s) for s in self.op.flat.shapes],
                "attention_modules": self.attention_modules, "device": str(self.op.device),
                "penalty": self._penalty_fn is not None}

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.op.matvec(self._tensor(v)).cpu().numpy()

    def matmat(self, rows: np.ndarray) -> np.ndarray:
        return self.op.matmat(self._tensor(rows)).cpu().numpy()

    def fresh_matvec(self, v: np.ndarray) -> np.ndarray:
        return self.op.fresh_matvec(self._tensor(v)).cpu().numpy()

    def penalty_matmat(self, rows: np.ndarray) -> np.ndarray:
        """The penalty's Hessian (the builder's 5th item, batch-independent: one batch,
        weight 1, double backward so nothing is kept) applied to every row."""
        if self._penalty is None:
            if self._penalty_fn is None:
                raise ValueError("this shard's builder returned no penalty term")
            self._penalty = batch_free_operator(self.op.model, self.op.batches[0],
                                                self._penalty_fn)
        return self._penalty.matmat(self._tensor(rows)).cpu().numpy()

    def loss(self) -> float:
        return self.op.loss()

    def setup_seconds(self) -> float:
        return self.op.setup_seconds

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(a).to(self.op.device, self.op.dtype)


class ShardedHessian:
    """The driver side of the data-parallel operator (see the module docstring)."""

    def __init__(self, builder: ShardBuilder, shards: int, method: str = "retained",
                 num_cpus: float = 1.0, num_gpus: float = 0.0,
                 device: torch.device | str = "cpu", start_timeout: float = 300.0) -> None:
        import ray
        from ray.exceptions import GetTimeoutError
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        if not ray.is_initialized():
            raise RuntimeError("the data-parallel Hessian (shards > 1) needs Ray: run the sweep "
                               "with the ray executor (or call ray.init() first)")
        self._ray = ray
        self.actors: list[Any] = []
        self.group: Any = None
        try:  # whatever fails from here on (a Ctrl-C included), no shard actor outlives it
            self.group = shard_group(shards, num_cpus, num_gpus)
            remote = ray.remote(ShardActor)
            for i in range(shards):  # shard i in bundle i: they start when the whole group is placed
                self.actors.append(remote.options(
                    num_cpus=num_cpus, num_gpus=num_gpus, max_concurrency=1, max_restarts=0,
                    scheduling_strategy=PlacementGroupSchedulingStrategy(
                        self.group, placement_group_bundle_index=i)).remote(
                            builder, i, shards, method, num_cpus, num_gpus))
            infos = self._start(shards, num_cpus, num_gpus, start_timeout, GetTimeoutError)
        except BaseException:
            self.close()
            raise
        self.n = int(infos[0]["n"])
        self.num_samples = sum(int(i["num_samples"]) for i in infos)
        self.dtype = getattr(torch, infos[0]["dtype"])
        self.device = torch.device(device)
        self.attention_modules = int(infos[0]["attention_modules"])
        self.names: list[str] = list(infos[0]["names"])
        self.shapes: list[tuple[int, ...]] = [tuple(s) for s in infos[0]["shapes"]]
        self.method = method
        self.hvps = 0
        self._has_penalty = bool(infos[0].get("penalty"))

    def _start(self, shards: int, num_cpus: float, num_gpus: float, start_timeout: float,
               timeout_error: type[Exception]) -> list[dict[str, Any]]:
        """Every shard's info once it is built; a clear error when one cannot start or build."""
        from ray.exceptions import RayActorError

        try:
            infos = self._ray.get([a.info.remote() for a in self.actors], timeout=start_timeout)
        except timeout_error:
            free = self._ray.available_resources()
            raise RuntimeError(
                f"{shards} shard actors (num_cpus={num_cpus}, num_gpus={num_gpus} each) did not "
                f"start within {start_timeout:.0f} s; free now: CPU {free.get('CPU', 0):g}, GPU "
                f"{free.get('GPU', 0):g}. Leave room for them (fewer pool workers, e.g. "
                "executor.workers 1 with num_gpus 0) or lower shard_num_cpus / shard_num_gpus"
            ) from None
        except RayActorError as exc:  # the builder raised inside an actor: say what it said
            cause = [line for line in str(exc).splitlines() if "Error:" in line]
            raise RuntimeError(f"a shard actor could not build its shard: "
                               f"{cause[-1].strip() if cause else exc}") from exc
        if len({i["n"] for i in infos}) != 1:
            raise RuntimeError(f"shards disagree on the parameter count: {[i['n'] for i in infos]}")
        return infos

    def _gather(self, call: str, array: np.ndarray) -> torch.Tensor:
        ref = self._ray.put(array)
        parts = self._ray.get([getattr(a, call).remote(ref) for a in self.actors])
        total = parts[0].copy()
        for p in parts[1:]:
            total += p
        return torch.from_numpy(total).to(self.device, self.dtype)

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        self.hvps += 1
        return self._gather("matvec", v.detach().cpu().numpy())

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        self.hvps += rows.shape[0]
        return self._gather("matmat", rows.detach().cpu().numpy())

    def fresh_matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self._gather("fresh_matvec", v.detach().cpu().numpy())

    def loss(self) -> float:
        return float(sum(self._ray.get([a.loss.remote() for a in self.actors])))

    def penalty_operator(self) -> "ShardPenalty":
        """The Hessian of the builder's penalty term (batch-independent) as an operator on
        the driver's device and dtype, applied on shard 0."""
        if not self._has_penalty:
            raise ValueError("the shard builder returned no penalty term (a 5th item): there "
                             "is no penalty Hessian to apply")
        return ShardPenalty(self)

    @property
    def setup_seconds(self) -> float:
        """The slowest shard's graph build (they run in parallel)."""
        return max(self._ray.get([a.setup_seconds.remote() for a in self.actors]))

    def close(self) -> None:
        """Stop the shard actors (their memory goes with them) and free their placement group."""
        for a in self.actors:
            self._ray.kill(a)
        self.actors = []
        if self.group is not None:
            self._ray.util.remove_placement_group(self.group)
            self.group = None

    def __enter__(self) -> "ShardedHessian":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ShardPenalty:
    """The penalty's Hessian of a `ShardedHessian`, computed by its shard 0 (every shard holds
    the same parameters and the penalty does not see the batch), with the driver-side
    operator interface: n, dtype, device, matvec, matmat, fresh_matvec, hvps."""

    def __init__(self, sharded: ShardedHessian) -> None:
        self._sharded = sharded
        self.n, self.dtype, self.device = sharded.n, sharded.dtype, sharded.device
        self.hvps = 0

    def matmat(self, rows: torch.Tensor) -> torch.Tensor:
        self.hvps += rows.shape[0]
        ray = self._sharded._ray
        out = ray.get(self._sharded.actors[0].penalty_matmat.remote(
            rows.detach().cpu().numpy()))
        return torch.from_numpy(out.copy()).to(self.device, self.dtype)  # Ray's is read-only

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matmat(v.unsqueeze(0))[0]

    def fresh_matvec(self, v: torch.Tensor) -> torch.Tensor:
        return self.matvec(v)  # nothing is kept between the penalty's products


def shard_group(shards: int, num_cpus: float, num_gpus: float) -> Any:
    """One placement group of `shards` bundles of the shards' resources, spread over nodes
    where it must be and packed where it can: Ray reserves all of them or none."""
    from ray.util import placement_group

    bundle = {k: v for k, v in (("CPU", num_cpus), ("GPU", num_gpus)) if v > 0}
    if not bundle:
        raise ValueError("shard actors need num_cpus > 0 or num_gpus > 0 (shard_num_cpus / "
                         "shard_num_gpus)")
    return placement_group([bundle] * shards, strategy="PACK")


def shard_batches(batches: Sequence[Batch], shard: int, shards: int
                  ) -> tuple[list[Batch], list[float]]:
    """Round-robin shard `shard` of `shards` and its weights n_k / N over all batches."""
    if shards > len(batches):
        raise ValueError(f"shards={shards} but the data make only {len(batches)} batch(es): "
                         f"shard {shard} would hold none; use shards <= {len(batches)} (or a "
                         "smaller batch_size)")
    total = sum(len(b[0]) for b in batches)
    mine = list(batches[shard::shards])
    return mine, [len(b[0]) / total for b in mine]
