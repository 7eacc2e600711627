"""Every file in clusters/ is valid for the tool that reads it and says what the README promises.

Launcher YAMLs are validated by Ray's own code (its JSON schema, then the launcher's
`prepare_config` + `validate_config`, as `ray up` does before touching a cloud); KubeRay
manifests against the fields the ray.io/v1 CRDs require; the Dockerfile against the Makefile's
pins. On top: token authentication on every node, the dashboard on localhost, the harness
installed with the pinned torch build, and results somewhere every node can reach. A file no
check knows fails the suite.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parent.parent
CLUSTERS = ROOT / "clusters"
RAY_SCHEMA = Path(ray.__file__).parent / "autoscaler" / "ray-schema.json"
TOKEN_FILE = "~/.ray/auth_token"
#: Where each launcher provider keeps results that every node can reach.
RESULTS_BY_PROVIDER = {"aws": "s3://", "gcp": "gs://", "local": "/mnt/shared"}
KUBERAY_KINDS = ("RayCluster", "RayJob")


def kind_of(path: Path) -> str | None:
    """Which check covers a file of clusters/ (None: nothing does)."""
    if path.name == "README.md":
        return "readme"
    if path.name == "Dockerfile":
        return "image"
    if path.suffix in (".yaml", ".yml"):
        doc = yaml.safe_load(path.read_text())
        if isinstance(doc, dict) and "provider" in doc:
            return "launcher"
        if isinstance(doc, dict) and str(doc.get("apiVersion", "")).startswith("ray.io/"):
            return "kuberay"
    return None


FILES = sorted(p for p in CLUSTERS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
LAUNCHERS = [p for p in FILES if kind_of(p) == "launcher"]
KUBERAY = [p for p in FILES if kind_of(p) == "kuberay"]


def torch_pins() -> list[str]:
    """The `TORCH_PINS` of the Makefile: what every install must pin."""
    match = re.search(r"^TORCH_PINS\s*:=\s*(.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "Makefile has no TORCH_PINS line"
    pins = match.group(1).split()
    assert pins and all("==" in p for p in pins)
    return pins


def ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def test_every_file_in_clusters_is_covered_by_a_check():
    assert FILES, "clusters/ is empty"
    uncovered = [p.relative_to(ROOT).as_posix() for p in FILES if kind_of(p) is None]
    assert not uncovered, (f"no check in tests/test_clusters.py covers {uncovered}: add one "
                           "(a launcher YAML has `provider`, a KubeRay manifest `apiVersion: "
                           "ray.io/v1`)")
    # one of each kind the README promises
    providers = {yaml.safe_load(p.read_text())["provider"]["type"] for p in LAUNCHERS}
    assert providers == {"aws", "gcp", "local"}
    assert {yaml.safe_load(p.read_text())["kind"] for p in KUBERAY} == set(KUBERAY_KINDS)


# --- Ray cluster launcher -------------------------------------------------------------------


def start_commands(doc: dict[str, Any], key: str) -> list[str]:
    return [c for c in doc[key] if "ray start" in c]


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_config_passes_rays_own_validation(path):
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    doc = yaml.safe_load(path.read_text())
    jsonschema.validate(doc, json.loads(RAY_SCHEMA.read_text()))
    # what `ray up` does before it contacts a provider: merge the provider's defaults, expand
    # node types, validate
    prepared = prepare_config(copy.deepcopy(doc))
    validate_config(prepared)
    assert prepared["head_node_type"] in prepared["available_node_types"]


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_config_names_the_keys_its_provider_needs(path):
    doc = yaml.safe_load(path.read_text())
    provider = doc["provider"]["type"]
    assert doc["cluster_name"] and doc["auth"]["ssh_user"]
    assert doc["head_start_ray_commands"] and doc["worker_start_ray_commands"]
    if provider == "local":
        # the local provider builds its single node type itself and refuses given ones
        assert doc["provider"]["head_ip"] and doc["provider"]["worker_ips"]
        assert "available_node_types" not in doc and "head_node_type" not in doc
        return
    assert doc["provider"]["region"]
    types = doc["available_node_types"]
    assert doc["head_node_type"] in types
    workers = [t for name, t in types.items() if name != doc["head_node_type"]]
    assert workers and all("node_config" in t and "max_workers" in t for t in workers)
    if provider == "aws":
        assert all(re.match(r"^(g|p)\d", t["node_config"]["InstanceType"]) for t in workers), \
            "AWS workers should be GPU instances (g*/p* families)"
    if provider == "gcp":
        assert doc["provider"]["project_id"]
        for t in workers:
            assert t["node_config"]["guestAccelerators"][0]["acceleratorCount"] >= 1
            assert t["resources"]["GPU"] >= 1  # GCP does not report attached GPUs itself
            # GPU VMs cannot live-migrate
            assert {"onHostMaintenance": "TERMINATE"} in t["node_config"]["scheduling"]


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_starts_every_node_with_token_auth_and_a_localhost_dashboard(path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    assert "RAY_AUTH_MODE=disabled" not in text
    # the same token on every node: the launcher copies the local one
    assert doc["file_mounts"][TOKEN_FILE] == TOKEN_FILE
    head = start_commands(doc, "head_start_ray_commands")
    workers = start_commands(doc, "worker_start_ray_commands")
    assert len(head) == 1 and len(workers) == 1
    for command in head + workers:
        assert re.search(r"RAY_AUTH_MODE=token\s+(\S*/)?ray start", command), command
    assert "--head" in head[0] and "--dashboard-host=127.0.0.1" in head[0]
    assert "--autoscaling-config=~/ray_bootstrap_config.yaml" in head[0]
    port = re.search(r"--port=(\d+)", head[0]).group(1)
    assert f"--address=$RAY_HEAD_IP:{port}" in workers[0]
    # shells of `ray exec` / `ray attach` (where `harness run` runs) get token mode too
    assert any("export RAY_AUTH_MODE=token" in c and ".bashrc" in c
               for c in doc["setup_commands"])


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_installs_the_harness_with_the_pinned_torch(path):
    doc = yaml.safe_load(path.read_text())
    repo = [remote for remote, local in doc["file_mounts"].items() if local == "."]
    assert len(repo) == 1, "the repository is synced to the nodes (run `ray up` from its root)"
    assert ".venv" in doc["rsync_exclude"] and "results" in doc["rsync_exclude"]
    setup = "\n".join(doc["setup_commands"])
    if "make venv" in setup:  # the Makefile pins torch itself
        assert f"cd {repo[0]} && make venv" in setup
    else:
        assert all(pin in setup for pin in torch_pins()), f"setup misses {torch_pins()}"
        assert f"pip install -q -e {repo[0]}" in setup
    image = doc.get("docker", {}).get("image")
    if image:
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311"), \
            f"nodes must run the driver's Ray {ray.__version__}: {image}"


@pytest.mark.parametrize("path", LAUNCHERS, ids=ids(LAUNCHERS))
def test_launcher_says_how_to_run_a_sweep_and_where_results_go(path):
    text = path.read_text()
    provider = yaml.safe_load(text)["provider"]["type"]
    rel = path.relative_to(ROOT).as_posix()
    assert f"ray up {rel}" in text and f"ray exec {rel}" in text
    assert "harness run" in text and "--address auto" in text
    assert "ray job submit" in text and "--address http://127.0.0.1:8265" in text
    assert f"--results {RESULTS_BY_PROVIDER[provider]}" in text


# --- KubeRay --------------------------------------------------------------------------------


def cluster_spec(doc: dict[str, Any]) -> dict[str, Any]:
    return doc["spec"] if doc["kind"] == "RayCluster" else doc["spec"]["rayClusterSpec"]


def pod_specs(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec["headGroupSpec"]["template"]["spec"]] + \
        [g["template"]["spec"] for g in spec["workerGroupSpecs"]]


@pytest.mark.parametrize("path", KUBERAY, ids=ids(KUBERAY))
def test_kuberay_manifest_has_the_fields_its_crd_requires(path):
    doc = yaml.safe_load(path.read_text())
    assert doc["apiVersion"] == "ray.io/v1" and doc["kind"] in KUBERAY_KINDS
    assert doc["metadata"]["name"]
    spec = cluster_spec(doc)
    assert spec["rayVersion"] == ray.__version__
    head = spec["headGroupSpec"]
    groups = spec["workerGroupSpecs"]
    assert groups
    for group in [head, *groups]:
        # KubeRay's rayStartParams is a map of strings
        assert isinstance(group["rayStartParams"], dict)
        assert all(isinstance(v, str) for v in group["rayStartParams"].values())
    for group in groups:
        assert group["groupName"]
        assert 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    names = [c["name"] for p in pod_specs(spec) for c in p["containers"][:1]]
    assert names == ["ray-head"] + ["ray-worker"] * len(groups)
    images = {c["image"] for p in pod_specs(spec) for c in p["containers"]}
    assert len(images) == 1, "head and workers run one image (clusters/Dockerfile)"
    gpus = [c["resources"]["limits"].get("nvidia.com/gpu", 0)
            for g in groups for c in g["template"]["spec"]["containers"]]
    assert max(gpus) >= 1


@pytest.mark.parametrize("path", KUBERAY, ids=ids(KUBERAY))
def test_kuberay_manifest_turns_token_auth_on_and_keeps_the_dashboard_inside(path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    spec = cluster_spec(doc)
    assert spec["authOptions"]["mode"] == "token"
    assert "RAY_AUTH_MODE=disabled" not in text
    for pod in pod_specs(spec):
        for container in pod["containers"]:
            env = {e["name"]: e.get("value") for e in container.get("env", [])}
            assert env.get("RAY_AUTH_MODE", "token") == "token"
    head = spec["headGroupSpec"]
    if doc["kind"] == "RayCluster":
        assert head["rayStartParams"]["dashboard-host"] == "127.0.0.1"
    else:
        # the operator polls the job through the head Service: only inside the cluster
        assert head["serviceType"] == "ClusterIP"


@pytest.mark.parametrize("path", KUBERAY, ids=ids(KUBERAY))
def test_kuberay_manifest_runs_a_sweep_into_shared_results(path):
    text = path.read_text()
    doc = yaml.safe_load(text)
    spec = cluster_spec(doc)
    if doc["kind"] == "RayJob":
        entry = doc["spec"]["entrypoint"]
        assert entry.startswith("harness run ")
        results = re.search(r"--results\s+(\S+)", entry).group(1)
        assert results.startswith(("s3://", "gs://")), results
        names = {p.get("serviceAccountName") for p in pod_specs(spec)}
        assert len(names) == 1 and None not in names, "every pod may write the bucket"
    else:
        assert "harness run" in text
        results = re.search(r"--results\s+(\S+)", text).group(1)
        mounts = [{m["mountPath"] for c in p["containers"] for m in c.get("volumeMounts", [])}
                  for p in pod_specs(spec)]
        assert all(results in m for m in mounts), "every pod mounts the results volume"


# --- image and README -----------------------------------------------------------------------


def test_dockerfile_builds_on_the_pinned_ray_with_the_pinned_torch():
    text = (CLUSTERS / "Dockerfile").read_text()
    froms = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    assert froms == [f"rayproject/ray:{ray.__version__}-py311-gpu"]
    installs = [line for line in text.splitlines() if "pip install" in line]
    assert len(installs) == 2, "torch first, then the harness"
    assert all(pin in line for pin in torch_pins() for line in installs)
    assert " -e . " in installs[1]
    for source in ("pyproject.toml", "harness", "tasks", "sweeps"):
        assert re.search(rf"^COPY\b.*\b{source}\b", text, re.MULTILINE), f"the image misses {source}"
    # every KubeRay manifest runs an image built from this file
    tag = re.search(r"docker build -f clusters/Dockerfile -t (\S+) \.", text).group(1)
    for path in KUBERAY:
        assert tag in path.read_text()


def test_readme_lists_every_file_and_the_security_setup():
    text = (CLUSTERS / "README.md").read_text()
    missing = [p.name for p in FILES if p.name != "README.md" and f"`{p.name}`" not in text]
    assert not missing, f"clusters/README.md does not describe {missing}"
    for phrase in ("RAY_AUTH_MODE=token", "ray get-auth-token --generate", "RAY_AUTH_TOKEN",
                   "--dashboard-host=127.0.0.1", "s3://", "gs://", "authOptions"):
        assert phrase in text, phrase
