"""A pool of long-lived Ray worker actors driven by one `ray.wait` loop.

Why not `ray.util.ActorPool`: it loses track of which unit a dead actor was
running and shrinks as actors die. Here each actor gets batches of units in a
streaming call that yields one Outcome per unit as it finishes, so the driver
always knows which unit an actor is running and since when:
* a unit whose actor died is re-queued (up to `max_retries`) on a fresh actor
  that replaces the dead one; the units queued behind it never ran and go back
  to the queue as they were;
* a unit running past `unit_timeout` gets its actor killed and replaced, is
  recorded in `_failures` as `UnitTimeout` and retried per `retry_failures`;
* batches are sized from the measured unit time (about `TARGET_BATCH_S` of
  work, at most `max_batch` units, never more than an even share of what is
  left), so no-op units cost one actor call per batch while long units go one
  at a time; each actor has at most `max_inflight` batches queued;
* units run on actors of their task's shape (num_cpus, num_gpus: the executor
  block, or its `tasks` entry), one queue per shape;
* with `workers: 0` the pool is resized about once a second: per shape as many
  actors as the cluster's resources hold now, up to `max_workers` in all and
  never more than the units left, which it also asks the autoscaler for
  (`request_resources`), so it grows as nodes join; idle actors beyond what
  the remaining units need are let go, so the autoscaler can remove their nodes.
A unit's own exception never escapes its batch: the runner records it and the
batch goes on.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import ray
from ray.exceptions import RayActorError, RayTaskError

from harness.engine.errors import ExecutorError
from harness.engine.run_config import RunConfig, RunSummary, TaskResources, retry_failed
from harness.engine.runner import (
    Outcome,
    UnitTimeout,
    driver_meta,
    record_failure,
    stored_outcome,
)
from harness.engine.store import Store
from harness.engine.units import WorkUnit

log = logging.getLogger("harness.ray")

#: Work per actor call the batch size aims at: ≫ the ~1 ms a call costs, ≪ a unit timeout.
TARGET_BATCH_S = 0.1
#: Warn when no actor has started after this long (the cluster may lack the resources).
START_WARNING_S = 60.0
#: Seconds between two resizes of the pool (each asks Ray for the cluster's resources).
RESIZE_S = 1.0

#: A worker actor's resources, (num_cpus, num_gpus); units of one shape share actors.
Shape = tuple[float, float]


class SecurityError(ExecutorError):
    """Refusing to run Ray without token authentication."""


def cap_gpu_memory(num_gpus: float, cuda: Any = None) -> float | None:
    """Cap this process to `num_gpus` of each visible GPU's memory when it holds a fraction.

    Ray's fractional `num_gpus` only schedules; without a cap, workers that
    share a GPU can take each other's memory. Must run before the first CUDA
    allocation. Returns the fraction applied, None when there is nothing to cap.
    """
    if cuda is None:
        import torch

        cuda = torch.cuda
    if not 0 < num_gpus < 1 or not cuda.is_available():
        return None
    for device in range(cuda.device_count()):
        cuda.set_per_process_memory_fraction(num_gpus, device)
    return num_gpus


class Worker:
    """One actor: one device (or a fraction of a GPU), one cache, one thread of units."""

    def __init__(self, results_root: str, num_gpus: float, num_cpus: float) -> None:
        if num_gpus == 0:
            # Actors without GPUs otherwise see every GPU of the node.
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
        import torch

        from harness.engine.registry import load_tasks
        from harness.engine.runner import UnitRunner

        torch.set_num_threads(max(1, int(num_cpus)))
        use_cuda = num_gpus > 0 and torch.cuda.is_available()
        if use_cuda:
            cap_gpu_memory(num_gpus)
        load_tasks()
        node_id = ray.get_runtime_context().get_node_id()
        self.runner = UnitRunner(results_root, device="cuda" if use_cuda else "cpu",
                                 node_id=node_id)

    def pid(self) -> int:
        return os.getpid()

    def run_batch(self, units: list[dict[str, Any]],
                  attempts: list[int]) -> Iterator[dict[str, Any]]:
        """Run units in order, yielding each one's Outcome as soon as it is written."""
        for unit, attempt in zip(units, attempts):
            yield asdict(self.runner.run(WorkUnit.from_dict(unit), attempt))


def ensure_ray(config: RunConfig) -> bool:
    """Join `config.address` (or $RAY_ADDRESS), else start an embedded local Ray.

    Returns True when this call connected, so the caller disconnects at the end.
    """
    if os.environ.get("RAY_AUTH_MODE", "").lower() == "disabled":
        raise SecurityError("RAY_AUTH_MODE=disabled: the harness keeps Ray token authentication "
                            "on; unset RAY_AUTH_MODE (a token is created in ~/.ray/auth_token)")
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {"include_dashboard": False, "logging_level": logging.WARNING,
                               "configure_logging": True}
    address = config.address or os.environ.get("RAY_ADDRESS")
    if address:
        try:
            ray.init(address=address, **options)
        except ConnectionError as exc:
            raise ExecutorError(
                f"cannot join the Ray cluster at {address!r}: {exc}. Check the address (`ray "
                "status` on the head node) and that this machine holds the cluster's token "
                "(~/.ray/auth_token or RAY_AUTH_TOKEN; see clusters/README.md)") from exc
    else:
        # "local" starts a new instance even when a `ray start` cluster exists
        # on this machine (plain ray.init() would silently join that one).
        ray.init(address="local", num_cpus=embedded_cpus(config), **options)
    return True


def detected_cpus() -> float:
    """The CPUs Ray itself detects here: a container's CPU limit, not the host's core count."""
    from ray._private.utils import get_num_cpus

    return float(get_num_cpus())


def embedded_cpus(config: RunConfig) -> int | None:
    """num_cpus for an embedded Ray: None (Ray's own detection) unless the fixed `workers`
    per shape (or one actor of the largest shape) need more logical CPUs than that, so
    every asked-for actor can start."""
    cpus = [config.num_cpus] + [config.for_task(t).num_cpus for t in config.tasks]
    needed = math.ceil(config.workers * sum(cpus) if config.workers > 0 else max(cpus))
    return needed if needed > detected_cpus() else None


def plan_workers(demand: dict[Shape, int], workers: int, max_workers: int) -> dict[Shape, int]:
    """Actors wanted per shape for `demand` units left of each: `workers` each when that is
    fixed (> 0), else up to `max_workers` in all (0: no bound): one per shape first, the
    rest in shape order."""
    if workers > 0:
        return {s: min(workers, d) for s, d in demand.items()}
    want = {s: min(1, d) for s, d in demand.items()}
    left = (max_workers or sum(demand.values())) - sum(want.values())
    for s, d in demand.items():
        extra = max(0, min(d - want[s], left))
        want[s] += extra
        left -= extra
    return want


def fit_workers(want: dict[Shape, int], held: dict[Shape, int],
                total: dict[str, float]) -> dict[Shape, int]:
    """How many of `want` to hold per shape: the `held` ones first, then as many more as the
    cluster's `total` CPU/GPU hold, in shape order; at least one for a shape that wants any
    (it waits for a node, and its pending actor is itself a demand the autoscaler sees)."""
    free = {"CPU": total.get("CPU", 0.0), "GPU": total.get("GPU", 0.0)}
    target: dict[Shape, int] = {}
    for (cpus, gpus), w in want.items():
        target[(cpus, gpus)] = keep = min(held.get((cpus, gpus), 0), w)
        free["CPU"] -= keep * cpus
        free["GPU"] -= keep * gpus
    for (cpus, gpus), w in want.items():
        while (target[(cpus, gpus)] < w and free["CPU"] >= cpus - 1e-9
               and free["GPU"] >= gpus - 1e-9):
            target[(cpus, gpus)] += 1
            free["CPU"] -= cpus
            free["GPU"] -= gpus
        target[(cpus, gpus)] = max(target[(cpus, gpus)], min(1, w))
    return target


def bundles(want: dict[Shape, int]) -> list[dict[str, float]]:
    """The autoscaler request for `want`: one resource bundle per actor."""
    out = []
    for (cpus, gpus), n in want.items():
        bundle = {k: v for k, v in (("CPU", cpus), ("GPU", gpus)) if v > 0}
        out += [bundle] * n
    return out


def request_resources(request: list[dict[str, float]]) -> None:
    """Ask the autoscaler for `request` (replacing any earlier request; [] withdraws it)."""
    from ray.autoscaler.sdk import request_resources as ask

    ask(bundles=request)


def batch_size(unit_s: float | None, max_batch: int, queued: int, places: int) -> int:
    """Units in the next actor call: about TARGET_BATCH_S of work at the measured unit
    time `unit_s` (one unit until a time is known), at most `max_batch`, and at most an
    even share of the `queued` units over the `places` (actors × in-flight batches), so
    the tail of a sweep still spreads over every worker."""
    if max_batch <= 1 or unit_s is None:
        return 1
    size = min(max_batch, max(1, int(TARGET_BATCH_S / max(unit_s, 1e-6))))
    return max(1, min(size, math.ceil(queued / max(places, 1))))


def no_start_message(config: RunConfig, workers: int, total: dict[str, float],
                     free: dict[str, float]) -> str:
    """What was asked for and what the cluster has, when no worker actor could start."""
    def show(resources: dict[str, float]) -> str:
        shown = [f"CPU {resources.get('CPU', 0):g}", f"GPU {resources.get('GPU', 0):g}"]
        if "memory" in resources:
            shown.append(f"memory {resources['memory'] / 2**30:.1f} GiB")
        return ", ".join(shown)

    return (f"no worker actor started within start_timeout={config.start_timeout:g}s: asked for "
            f"{workers} worker(s) of num_cpus={config.num_cpus:g}, num_gpus={config.num_gpus:g} "
            f"each; the cluster has {show(total)} in all, {show(free)} free. Lower num_cpus / "
            "num_gpus or workers, add nodes, or raise executor.start_timeout (`ray status`)")


@dataclass
class _Batch:
    units: list[tuple[WorkUnit, int]]
    stream: Any                     # ObjectRefGenerator of the actor call
    next: int = 0                   # index of the unit running now
    started: float | None = None    # when that unit started, as seen by the driver


@dataclass
class _Slot:
    actor: Any
    ready: Any                      # ObjectRef of the actor's first call; None once it answered
    shape: Shape
    batches: deque[_Batch] = field(default_factory=deque)


class _Pool:
    """The driver's state: a queue of (unit, attempt) per shape, slots of actors and their
    batches."""

    def __init__(self, units: list[WorkUnit], results_root: str, config: RunConfig,
                 on_outcome: Callable[[Outcome], None], summary: RunSummary) -> None:
        self.config = config
        self.on_outcome = on_outcome
        self.summary = summary
        self.store = Store(results_root)
        self.resources: dict[str, TaskResources] = {
            t: config.for_task(t) for t in dict.fromkeys(u.task for u in units)}
        self.queues: dict[Shape, deque[tuple[WorkUnit, int]]] = {}
        for unit in units:
            self.queue_of(unit).append((unit, 1))
        self.remotes: dict[Shape, Any] = {}
        self.results_root = results_root
        self.slots: list[_Slot] = []
        self.requested: list[dict[str, float]] | None = None  # the autoscaler request in force
        self.resized = -math.inf
        self.unit_s: float | None = None  # running mean of a unit's wall time
        self.deaths_since_success = 0
        self.started = time.perf_counter()
        self.warned = False
        self.none_ready_since: float | None = self.started
        self.resize()

    def queue_of(self, unit: WorkUnit) -> deque[tuple[WorkUnit, int]]:
        return self.queues.setdefault(self.resources[unit.task].shape, deque())

    def queued(self) -> int:
        return sum(len(q) for q in self.queues.values())

    def _spawn(self, shape: Shape) -> _Slot:
        if shape not in self.remotes:
            self.remotes[shape] = ray.remote(Worker).options(
                num_cpus=shape[0], num_gpus=shape[1], max_concurrency=1, max_restarts=0,
                max_task_retries=0)
        actor = self.remotes[shape].remote(self.results_root, shape[1], shape[0])
        return _Slot(actor, actor.pid.remote(), shape)

    # -- sizing ---------------------------------------------------------------
    def resize(self) -> None:
        """Grow or shrink the pool to what the units left need and the cluster holds."""
        self.resized = time.perf_counter()
        demand = Counter({s: len(q) for s, q in self.queues.items()})
        for slot in self.slots:
            demand[slot.shape] += sum(len(b.units) - b.next for b in slot.batches)
        want = plan_workers(dict(demand), self.config.workers, self.config.max_workers)
        held = Counter(slot.shape for slot in self.slots)
        target = want
        if self.config.workers <= 0:
            target = fit_workers(want, held, ray.cluster_resources())
            if self.config.max_workers > 0:
                self._request(bundles(want))
        # idle actors past the target go, those that never started first
        for slot in sorted(self.slots, key=lambda s: s.ready is None):
            if held[slot.shape] > target.get(slot.shape, 0) and not slot.batches:
                ray.kill(slot.actor)
                self.slots.remove(slot)
                held[slot.shape] -= 1
        for shape, n in target.items():
            self.slots += [self._spawn(shape) for _ in range(n - held[shape])]

    def _request(self, request: list[dict[str, float]]) -> None:
        if request != self.requested:
            request_resources(request)
            self.requested = request

    # -- dispatch ------------------------------------------------------------
    def fill(self) -> None:
        """Queue batches on started actors only: one that never starts (its node is gone, the
        cluster lacks its resources) holds no units."""
        now = time.perf_counter()
        places = Counter(slot.shape for slot in self.slots)
        for slot in self.slots:
            queue = self.queues.get(slot.shape)
            while (queue and slot.ready is None
                   and len(slot.batches) < self.config.max_inflight):
                n = batch_size(self.unit_s, self.config.max_batch, len(queue),
                               places[slot.shape] * self.config.max_inflight)
                units = [queue.popleft() for _ in range(min(n, len(queue)))]
                stream = slot.actor.run_batch.options(num_returns="streaming").remote(
                    [u.to_dict() for u, _ in units], [a for _, a in units])
                batch = _Batch(units, stream)
                if not slot.batches:
                    batch.started = now
                slot.batches.append(batch)

    # -- events --------------------------------------------------------------
    def step(self) -> None:
        waitables: dict[Any, _Slot] = {}
        for slot in self.slots:
            if slot.ready is not None:
                waitables[slot.ready] = slot
            elif slot.batches:
                waitables[slot.batches[0].stream] = slot
        if not waitables:  # every actor was let go, and a retry came back: grow again
            self.resized = -math.inf
            return
        ready, _ = ray.wait(list(waitables), num_returns=1, timeout=self._wait_s())
        if not ready and not self.warned and self.unit_s is None \
                and all(s.ready is not None for s in self.slots) \
                and time.perf_counter() - self.started > START_WARNING_S:
            self.warned = True
            log.warning("no worker actor has started after %.0f s: does the cluster have free "
                        "per worker %s? (`ray status`)", START_WARNING_S,
                        " or ".join(f"num_cpus={c:g}, num_gpus={g:g}"
                                    for c, g in {s.shape for s in self.slots}))
        for item in ready:
            slot = waitables[item]
            if item is slot.ready:
                self._on_ready(slot)
            else:
                self._on_stream(slot)
        self._check_start()
        self._check_timeouts()

    def _check_start(self) -> None:
        """Give up when no actor has been up for `start_timeout` (none can be placed)."""
        now = time.perf_counter()
        if any(s.ready is None for s in self.slots):
            self.none_ready_since = None
            return
        if self.none_ready_since is None:
            self.none_ready_since = now
        elif now - self.none_ready_since > self.config.start_timeout:
            raise ExecutorError(no_start_message(self.config, len(self.slots),
                                                 ray.cluster_resources(),
                                                 ray.available_resources()))

    def _timeout(self, batch: _Batch) -> float:
        """The unit_timeout of the unit the batch is running now (0: none)."""
        return self.resources[batch.units[batch.next][0].task].unit_timeout

    def _wait_s(self) -> float:
        wait = RESIZE_S
        now = time.perf_counter()
        for slot in self.slots:
            if slot.batches and slot.batches[0].started is not None:
                limit = self._timeout(slot.batches[0])
                if limit > 0:
                    left = slot.batches[0].started + limit - now
                    wait = min(wait, max(left, 0.0) + 0.01)
        return wait

    def _on_ready(self, slot: _Slot) -> None:
        try:
            ray.get(slot.ready)
        except RayActorError as exc:
            self._replace(slot, exc, charge=False)
            return
        slot.ready = None
        if all(s.ready is None for s in self.slots) and not self.summary.ready_s:
            self.summary.ready_s = time.perf_counter() - self.started

    def _on_stream(self, slot: _Slot) -> None:
        batch = slot.batches[0]
        unit, attempt = batch.units[batch.next]
        try:
            result = Outcome(**ray.get(next(batch.stream)))
        except StopIteration:  # the stream ended early (cannot happen): re-queue the rest
            self._requeue(batch.units[batch.next:])
            self._advance(slot, finished=True)
            return
        except RayActorError as exc:
            self._replace(slot, exc, charge=True)
            return
        except RayTaskError as exc:  # an error outside the unit's own try block
            result = stored_outcome(self.store, unit) or Outcome(
                unit.unit_id, False, error=str(exc).splitlines()[0], error_type="RayTaskError")
            if not result.ok:
                record_failure(self.store, unit, exc, str(exc), driver_meta(attempt))
            batch.next += 1
            self._requeue(batch.units[batch.next:])
            self._advance(slot, finished=True)
            self._settle(unit, attempt, result)
            return
        self.deaths_since_success = 0
        self.unit_s = result.seconds if self.unit_s is None else (
            0.8 * self.unit_s + 0.2 * result.seconds)
        batch.next += 1
        self._advance(slot, finished=batch.next == len(batch.units))
        self._settle(unit, attempt, result)

    def _advance(self, slot: _Slot, finished: bool) -> None:
        now = time.perf_counter()
        if finished:
            slot.batches.popleft()
        if slot.batches:
            slot.batches[0].started = now

    def _settle(self, unit: WorkUnit, attempt: int, result: Outcome) -> None:
        if retry_failed(result, attempt, self.config):
            self.summary.retried += 1
            self.queue_of(unit).append((unit, attempt + 1))
        else:
            self.on_outcome(result)

    def _requeue(self, units: list[tuple[WorkUnit, int]]) -> None:
        """Units that never started go back to the front of their queue, in order, as they were."""
        for unit, attempt in reversed(units):
            self.queue_of(unit).appendleft((unit, attempt))

    def _replace(self, slot: _Slot, exc: Exception, charge: bool) -> None:
        """The slot's actor died: charge its running unit, re-queue the rest, start a new one."""
        self.deaths_since_success += 1
        if self.deaths_since_success > 2 * len(self.slots) + 2 * self.config.max_retries + 2:
            raise ExecutorError(
                f"worker actors keep dying without finishing a unit (last: {exc}); "
                "see the Ray logs under /tmp/ray/session_latest/logs") from exc
        log.warning("a worker died (%s); replacing it", type(exc).__name__)
        waiting = [u for b in slot.batches for u in b.units[b.next:]]
        if charge and waiting:
            (unit, attempt), waiting = waiting[0], waiting[1:]
            if attempt <= self.config.max_retries:
                self.summary.retried += 1
                self.queue_of(unit).appendleft((unit, attempt + 1))
            else:
                message = f"worker died on each of {attempt} attempts: {exc}"
                record_failure(self.store, unit, message, "", driver_meta(attempt))
                self.on_outcome(Outcome(unit.unit_id, False, error=message,
                                        error_type="WorkerLost"))
        self._requeue(waiting)
        self._restart(slot)

    def _restart(self, slot: _Slot) -> None:
        ray.kill(slot.actor)
        fresh = self._spawn(slot.shape)
        slot.actor, slot.ready, slot.batches = fresh.actor, fresh.ready, deque()

    def _check_timeouts(self) -> None:
        now = time.perf_counter()
        for slot in self.slots:
            if not slot.batches or slot.batches[0].started is None:
                continue
            batch = slot.batches[0]
            limit = self._timeout(batch)
            if limit <= 0 or now - batch.started <= limit:
                continue
            if ray.wait([batch.stream], timeout=0)[0]:
                continue  # it finished just in time: its outcome is waiting to be read
            unit, attempt = batch.units[batch.next]
            exc = UnitTimeout(f"unit ran past unit_timeout={limit:g}s; its worker was replaced")
            log.warning("unit %s ran past %gs; replacing its worker", unit.unit_id, limit)
            # its rows may be stored already (the actor stalled after the write): then it is done
            result = stored_outcome(self.store, unit) or Outcome(
                unit.unit_id, False, error=str(exc), error_type="UnitTimeout")
            if not result.ok:
                record_failure(self.store, unit, exc, "", driver_meta(attempt))
            self._requeue([u for b in slot.batches for u in b.units[b.next:]][1:])
            self._restart(slot)
            self._settle(unit, attempt, result)

    def run(self) -> None:
        while self.queued() or any(s.batches for s in self.slots):
            if time.perf_counter() - self.resized >= RESIZE_S:
                self.resize()
            self.fill()
            self.step()

    def close(self) -> None:
        for slot in self.slots:
            ray.kill(slot.actor)
        if self.requested:
            request_resources([])  # withdraw the request: idle nodes may go


def run_on_ray(units: list[WorkUnit], results_root: str, config: RunConfig,
               on_outcome: Callable[[Outcome], None], summary: RunSummary | None = None) -> None:
    """Run units on a pool of actors; returns when every unit has an outcome."""
    started_here = ensure_ray(config)
    pool = None
    try:
        pool = _Pool(units, results_root, config, on_outcome, summary or RunSummary())
        pool.run()
    finally:
        if pool is not None:
            pool.close()
        if started_here:
            ray.shutdown()
