"""Command line: list, status by file or by stored manifest, progress output, URI roots."""

from __future__ import annotations

import io
import json

import harness
from harness import cli
from harness.engine.progress import Progress

from conftest import write_sweep


def test_list_tasks_shows_params_and_descriptions(capsys):
    assert cli.main(["list", "tasks"]) == 0
    out = capsys.readouterr().out
    assert "evaluate: accuracy, NLL and ECE" in out
    assert "data_fraction: float = 1.0 range (0.0, 1.0]" in out
    assert 'model: str = "" — architecture' in out
    assert "train: train an architecture" in out and "checkpoint_at: list = []" in out


def test_list_models_prints_parameter_counts(capsys):
    assert cli.main(["list", "models"]) == 0
    out = capsys.readouterr().out
    counts = {line.split()[0]: line.split()[1] for line in out.splitlines()}
    assert counts["resnet18"] == "11.17M" and counts["vit_ti"] == "5.39M"
    assert counts["resnet50"] == "23.52M" and counts["wrn28_10"] == "36.48M"


def test_status_from_file_and_from_stored_manifest(in_tmp, capsys):
    path = write_sweep(in_tmp / "st.yaml", {"name": "st", "tasks": {"noop": {"index": [0, 1]}}})
    assert cli.main(["run", str(path), "--executor", "local", "tasks.noop.index=[0]"]) == 0
    capsys.readouterr()
    assert cli.main(["status", str(path)]) == 0  # the file lists 2 units; 1 ran
    assert capsys.readouterr().out.splitlines()[-1].split() == ["noop", "2", "1", "0", "1"]
    assert cli.main(["status", "st"]) == 0  # by name: the manifest of the last run
    assert capsys.readouterr().out.splitlines()[-1].split() == ["noop", "1", "1", "0", "0"]
    manifest = json.loads((in_tmp / "results" / "st" / "_sweep.json").read_text())
    assert manifest["spec"]["tasks"]["noop"]["index"] == [0]
    assert {"torch", "ray", "timm", "harness"} <= set(manifest["versions"])


def test_run_into_a_file_uri_root(in_tmp, capsys):
    path = write_sweep(in_tmp / "u.yaml", {"name": "u", "tasks": {"noop": {"index": [0, 1]}}})
    root = f"file://{in_tmp}/uri-results"
    assert cli.main(["run", str(path), "--executor", "local", "--results", root]) == 0
    assert len(list((in_tmp / "uri-results" / "u" / "noop").glob("*.parquet"))) == 2
    assert sorted(harness.load(root, task="noop")["index"]) == [0, 1]


def test_progress_falls_back_to_plain_lines_off_a_terminal():
    stream = io.StringIO()
    progress = Progress(4, stream=stream, log_every=0.0, tty=False)
    progress.update(done=1)
    progress.update(failed=1)
    progress.update(done=2)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 3  # one per update, no repeat at close
    assert "1 done, 1 failed, 4 total" in lines[1]
    assert "100.0%" in lines[-1] and "3 done, 1 failed" in lines[-1] and "ETA 0:00:00" in lines[-1]


def test_progress_redraws_in_place_on_a_terminal():
    stream = io.StringIO()
    progress = Progress(2, stream=stream, tty=True)
    progress.update(done=1)
    progress.close()
    text = stream.getvalue()
    assert text.startswith("\r[") and text.endswith("\n")
