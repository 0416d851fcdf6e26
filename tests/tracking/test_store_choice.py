"""Runs land in the store the user chose (``tracking.uri``, ``$MLFLOW_TRACKING_URI``, or the
default ``<work_dir>/mlruns.db``), every job of a sweep included, and nothing robustctl does
changes the process environment or MLflow's process-wide tracking URI.

Each test makes the chosen store differ from the default one, so a run that falls back to the
default is seen there."""

from __future__ import annotations

import os

import mlflow
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from robustctl.cli import app

runner = CliRunner()


def all_runs(uri: str) -> list:
    client = MlflowClient(uri)
    experiments = client.search_experiments()
    return client.search_runs([e.experiment_id for e in experiments]) if experiments else []


@pytest.fixture
def env_store(tmp_path, monkeypatch):
    """``$MLFLOW_TRACKING_URI`` pointing at ``<tmp>/other/env.db``, away from the default
    ``<work_dir>/mlruns.db``."""
    (tmp_path / "other").mkdir()
    uri = f"sqlite:///{tmp_path / 'other' / 'env.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


def sweep_args(tmp_path) -> list[str]:
    work = tmp_path / "work"
    return [
        "dataset=synthetic",
        "dataset.num_samples=160",
        "trainer.epochs=1",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "defense=none",
        "threat_model=none",
        f"work_dir={work}",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]


def test_every_job_of_a_sweep_logs_to_the_environments_store(env_store, tmp_path):
    """Two jobs, each logging its model: both children, their parent and both logged models are
    in the environment's store, nothing in the default one, and the variable is still set."""
    result = runner.invoke(app, ["train", "-m", *sweep_args(tmp_path)])
    assert result.exit_code == 0, result.output
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_store
    assert not (tmp_path / "work" / "mlruns.db").exists(), "a job fell back to the default store"
    found = all_runs(env_store)
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    assert len(found) == 3 and len(children) == 2
    assert all(r.info.status == "FINISHED" for r in found)
    assert all(len(r.outputs.model_outputs) == 1 for r in children)


def test_a_configured_uri_wins_over_the_environment_and_leaves_it_untouched(env_store, tmp_path):
    """``tracking.uri`` on the command line: the runs and their registered models go there, the
    environment's store stays empty, and MLflow's process-wide URI is never set."""
    chosen = f"sqlite:///{tmp_path / 'chosen.db'}"
    args = [*sweep_args(tmp_path), f"tracking.uri={chosen}", "tracking.register_model=true"]
    result = runner.invoke(app, ["train", "-m", *args])
    assert result.exit_code == 0, result.output
    assert len(all_runs(chosen)) == 3
    assert not (tmp_path / "other" / "env.db").exists()
    assert not (tmp_path / "work" / "mlruns.db").exists()
    versions = MlflowClient(chosen, registry_uri=chosen).search_model_versions(
        "name='robustctl-synthetic-resnet20-ce'"
    )
    assert len(versions) == 2
    assert os.environ.get("MLFLOW_TRACKING_URI") == env_store
    assert mlflow.get_tracking_uri() == env_store  # nothing set the process-wide URI


def test_an_unset_variable_stays_unset(tmp_path, monkeypatch):
    """Without the variable, a run that logs and registers its model leaves it unset."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    args = [a for a in sweep_args(tmp_path) if not a.startswith(("trainer.seed", "hydra."))]
    result = runner.invoke(app, ["train", *args, "tracking.register_model=true"])
    assert result.exit_code == 0, result.output
    assert "MLFLOW_TRACKING_URI" not in os.environ
    assert len(all_runs(f"sqlite:///{tmp_path / 'work' / 'mlruns.db'}")) == 1


def test_resuming_under_another_experiment_is_refused(tiny, tmp_path):
    """The checkpoint's run lives in experiment ``robustctl``; resuming it with
    ``tracking.experiment=other`` used to finish it there without a word."""
    assert runner.invoke(app, ["train", *tiny]).exit_code == 0
    args = [*tiny, "trainer.resume=true", "tracking.experiment=other"]
    result = runner.invoke(app, ["train", *args])
    assert result.exit_code == 2, result.output
    assert "is in MLflow experiment 'robustctl', but tracking.experiment='other'" in result.output
    assert "tracking.experiment=robustctl" in result.output  # the hint
    (run,) = all_runs(f"sqlite:///{tmp_path / 'mlruns.db'}")  # no second run was started
    assert run.info.status == "FINISHED"
