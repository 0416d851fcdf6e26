"""Named experiments: one parent run, a child per sweep job, the report logged to the parent."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.errors import ConfigError
from robustctl.experiments import available, load_experiment
from tests.test_cli import artifact_paths, runs


def test_every_experiment_file_loads_and_composes():
    from robustctl.config import compose

    assert {"smoke", "paper_fashion_cpu", "paper_mnist", "paper_cifar10"} <= set(available())
    for name in available():
        exp = load_experiment(name)
        first = [f"{k}={v[0]}" for k, v in exp.sweep.items()]
        compose([*exp.overrides, *first])  # raises ConfigError if a key or option is wrong


def test_unknown_experiment_lists_the_available_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_experiment("nope")


def test_smoke_experiment_end_to_end_through_the_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # Hydra's sweep folders (multirun/<date>/...) land in tmp_path
    result = CliRunner().invoke(app, ["experiment", "smoke", f"work_dir={tmp_path}"])
    assert result.exit_code == 0, result.output
    jobs = list((tmp_path / "multirun").glob("*/*/[0-9]"))
    assert len(jobs) == 3  # one Hydra job folder per loss, under tmp_path
    client, everything = runs(tmp_path)
    (parent,) = [r for r in everything if r.data.tags["command"] == "experiment"]
    children = [
        r for r in everything if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    ]
    assert parent.info.status == "FINISHED" and parent.data.tags["experiment"] == "smoke"
    assert sorted(r.data.tags["loss"] for r in children) == ["ce", "pdm", "rce"]
    assert all(
        r.data.tags["experiment"] == "smoke" and r.info.status == "FINISHED" for r in children
    )
    assert {"report/report.md", "report/report.html", "report/table2.csv"} <= artifact_paths(
        client, parent.info.run_id
    )
    # the report's Table 1 shows each child's clean accuracy
    text = client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))
    report = open(text).read()
    for child in children:
        assert (
            f"{100 * child.data.metrics['clean/accuracy']:.2f}" in report
        )  # Table 1 shows percent
