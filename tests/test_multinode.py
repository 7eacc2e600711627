"""A real multi-node Ray cluster on one machine: units spread over nodes, a node lost mid-sweep.

Three `ray start` nodes (a head and two workers, one logical CPU each, token
authentication on with a token file of this test, no dashboard) join over the
loopback address; `harness run --address` runs in a subprocess as a user runs
it. Each node is started in its own session, so exactly its processes (raylet,
object store, its workers) can be killed without touching any other Ray on
this machine (`ray stop` would stop them all). One CPU per node forces two
workers onto two nodes, and leaves a node free to take over from a lost one.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pyarrow.parquet as pq
import pytest
from conftest import harness_env, write_sweep

import harness
from harness.engine.store import Store

pytestmark = pytest.mark.slow

RAY = str(Path(sys.executable).with_name("ray"))
HARNESS = str(Path(sys.executable).with_name("harness"))
START_TIMEOUT_S = 90
SWEEP_TIMEOUT_S = 120


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before in this process: a closed socket's port can
    come back from the next bind, and two Ray components on one port fail `ray start`."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


class RayNode:
    """One `ray start` node in a session of its own, with its own temp dir."""

    def __init__(self, args: list[str], env: dict[str, str], num_cpus: int = 1) -> None:
        # Short: Ray puts Unix sockets under it (107-byte path limit).
        self.temp_dir = tempfile.mkdtemp(prefix="rmn", dir="/tmp")
        self.proc = subprocess.Popen(
            [RAY, "start", *args, f"--num-cpus={num_cpus}", "--node-ip-address=127.0.0.1",
             f"--temp-dir={self.temp_dir}", "--object-store-memory=100000000",
             "--disable-usage-stats"],
            env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        self.sid = self.proc.pid  # start_new_session: the CLI leads the session its daemons keep

    def wait_started(self) -> None:
        out, _ = self.proc.communicate(timeout=START_TIMEOUT_S)
        if self.proc.returncode != 0:
            raise RuntimeError(f"ray start failed ({self.proc.returncode}):\n{out[-3000:]}")

    def processes(self) -> list[psutil.Process]:
        found = []
        for p in psutil.process_iter():
            try:
                if os.getsid(p.pid) == self.sid:
                    found.append(p)
            except (ProcessLookupError, PermissionError, psutil.Error):
                continue
        return found

    def owns(self, pid: int) -> bool:
        try:
            return os.getsid(pid) == self.sid
        except (ProcessLookupError, PermissionError):
            return False

    def kill(self) -> None:
        """SIGKILL every process of this node (the raylet, the store, its workers)."""
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass
        psutil.wait_procs(procs, timeout=15)

    def remove(self) -> None:
        self.kill()
        shutil.rmtree(self.temp_dir, ignore_errors=True)


class Cluster:
    def __init__(self, port: int, env: dict[str, str], head: RayNode,
                 workers: list[RayNode]) -> None:
        self.address = f"127.0.0.1:{port}"
        self.env, self.head, self.workers = env, head, workers
        self.node_ids: list[str] = []

    def alive_node_ids(self, env: dict[str, str] | None = None) -> list[str]:
        """Node ids the cluster reports alive, asked by a driver of its own (env: its env)."""
        probe = ("import json, sys, ray; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                 "print(json.dumps(sorted(n['NodeID'] for n in ray.nodes() if n['Alive'])))")
        out = subprocess.run([sys.executable, "-c", probe, self.address], env=env or self.env,
                             check=True, capture_output=True, text=True, timeout=START_TIMEOUT_S).stdout
        return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    token_file = tmp_path_factory.mktemp("auth") / "auth_token"
    token_file.write_text(secrets.token_hex(32))
    token_file.chmod(0o600)
    env = harness_env()
    # Every node and every driver: token mode and the same token (not ~/.ray/auth_token).
    env.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token_file))
    env.pop("RAY_AUTH_TOKEN", None)
    port = free_port()
    nodes: list[RayNode] = []
    try:
        head = RayNode(["--head", f"--port={port}", "--include-dashboard=false",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={free_port()}",
                        f"--dashboard-agent-listen-port={free_port()}",
                        f"--ray-client-server-port={free_port()}"], env)
        nodes.append(head)
        head.wait_started()
        workers = [RayNode([f"--address=127.0.0.1:{port}",
                            f"--dashboard-agent-listen-port={free_port()}"], env)
                   for _ in range(2)]
        nodes += workers
        for w in workers:
            w.wait_started()
        c = Cluster(port, env, head, workers)
        deadline = time.monotonic() + START_TIMEOUT_S
        while len(c.node_ids) < 3:
            if time.monotonic() > deadline:
                raise RuntimeError("the worker nodes never joined the head")
            time.sleep(1)
            c.node_ids = c.alive_node_ids()
        yield c
    finally:
        for node in reversed(nodes):
            node.remove()


def noop_sweep(path: Path, name: str, n: int, sleep_s: float) -> Path:
    return write_sweep(path, {"name": name, "tasks": {"noop": {
        "index": list(range(n)), "sleep_s": sleep_s}}})


def harness_run(cluster: Cluster, sweep: Path, results: Path, **popen) -> subprocess.Popen:
    return subprocess.Popen(
        [HARNESS, "run", str(sweep), "--address", cluster.address, "--results", str(results),
         "--workers", "2", "--num-cpus", "1"],
        env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def test_a_driver_with_another_token_is_refused(cluster, tmp_path):
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    # fewer connection retries than Ray's 20 (one a second): the refusal is not transient
    env = {**cluster.env, "RAY_AUTH_TOKEN_PATH": str(wrong), "RAY_NUM_REDIS_GET_RETRIES": "2"}
    with pytest.raises(subprocess.CalledProcessError) as refused:
        cluster.alive_node_ids(env)
    assert "Failed to connect to Ray cluster" in refused.value.stderr
    assert cluster.alive_node_ids() == cluster.node_ids  # the same driver, the cluster's token


def test_a_node_without_token_mode_cannot_join(cluster):
    # the token file alone is not enough: `ray start --address` switches token mode on only
    # with RAY_AUTH_MODE=token (why every config in clusters/ sets it on every node)
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    env["RAY_NUM_REDIS_GET_RETRIES"] = "2"  # the refusal is not transient
    node = RayNode([f"--address={cluster.address}",
                    f"--dashboard-agent-listen-port={free_port()}"], env)
    try:
        with pytest.raises(RuntimeError, match="InvalidAuthToken"):
            node.wait_started()
    finally:
        node.remove()
    assert cluster.alive_node_ids() == cluster.node_ids


def test_a_sweep_spreads_over_two_nodes(cluster, tmp_path):
    n = 12
    sweep = noop_sweep(tmp_path / "spread.yaml", "spread", n, 0.3)
    proc = harness_run(cluster, sweep, tmp_path / "results")
    _, err = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    df = harness.load(str(tmp_path / "results"), task="noop", sweep="spread")
    assert sorted(df["index"]) == list(range(n))
    assert df["value"].tolist() == df["index"].astype(float).tolist()
    nodes = set(df["node_id"])
    # one CPU per node: the two workers cannot share one
    assert len(nodes) == 2 and nodes <= set(cluster.node_ids)
    assert df.groupby("node_id")["pid"].nunique().eq(1).all()  # one long-lived actor per node


def test_a_node_lost_mid_sweep_still_gives_every_unit_once(cluster, tmp_path):
    n = 24
    sweep = noop_sweep(tmp_path / "lost.yaml", "lost", n, 0.4)
    results = tmp_path / "results"
    proc = harness_run(cluster, sweep, results)
    store = Store(str(results))
    victim = None
    try:
        deadline = time.monotonic() + SWEEP_TIMEOUT_S
        while victim is None:
            assert proc.poll() is None, "the sweep ended before a node could be lost"
            assert time.monotonic() < deadline, "no worker node finished a unit"
            # a worker node whose (still running) actor has finished units
            pids = {pq.read_table(f, columns=["pid"])["pid"][0].as_py()
                    for f in store.files("lost", "noop")}
            owners = [w for w in cluster.workers if any(w.owns(pid) for pid in pids)]
            if owners:
                victim = owners[0]
            else:
                time.sleep(0.1)
        victim_pids = {pid for pid in pids if victim.owns(pid)}
        victim.kill()
        done_at_kill = store.unit_ids("lost", "noop")
        _, err = proc.communicate(timeout=SWEEP_TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(done_at_kill) < n, "the node was killed after the sweep had finished"
    assert proc.returncode == 0, err[-3000:]
    assert "died" in err  # the driver saw the actor die and replaced it
    df = harness.load(str(results), task="noop", sweep="lost")
    assert df["unit_id"].is_unique and len(df) == n
    assert sorted(df["index"]) == list(range(n))
    assert not (results / "lost" / "_failures").exists() or \
        harness.load(str(results), task="_failures", sweep="lost").empty
    # the lost node had finished units before it died, none after; the others did the rest
    lost_node = set(df.loc[df["pid"].isin(victim_pids), "node_id"])
    assert len(lost_node) == 1
    assert set(df.loc[df["node_id"].isin(lost_node), "unit_id"]) <= done_at_kill
    assert df["node_id"].nunique() >= 2


def test_harness_presents_the_token_and_names_a_refused_join(cluster, tmp_path):
    """`harness run --address` switches token mode on itself (a driver without
    RAY_AUTH_MODE=token is refused by Ray 2.60), and a refused join is exit 2 with a
    message naming the address and where the token comes from, not a traceback."""
    sweep = noop_sweep(tmp_path / "auth.yaml", "auth", 2, 0.0)
    command = [HARNESS, "run", str(sweep), "--address", cluster.address, "--results",
               str(tmp_path / "results"), "--workers", "1", "--num-cpus", "1"]
    env = {k: v for k, v in cluster.env.items() if k != "RAY_AUTH_MODE"}
    joined = subprocess.run(command, env=env, capture_output=True, text=True,
                            timeout=SWEEP_TIMEOUT_S)
    assert joined.returncode == 0, joined.stderr[-3000:]
    wrong = tmp_path / "wrong_token"
    wrong.write_text(secrets.token_hex(32))
    env.update(RAY_AUTH_TOKEN_PATH=str(wrong), RAY_NUM_REDIS_GET_RETRIES="2")
    command[command.index("--results") + 1] = str(tmp_path / "other")  # units to run
    refused = subprocess.run(command, env=env, capture_output=True, text=True,
                             timeout=SWEEP_TIMEOUT_S)
    assert refused.returncode == 2, refused.stderr[-3000:]
    assert f"cannot join the Ray cluster at '{cluster.address}'" in refused.stderr
    assert "Traceback" not in refused.stderr
