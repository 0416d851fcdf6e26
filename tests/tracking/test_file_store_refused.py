"""A plain-folder ``tracking.uri`` (MLflow's file store, refused by MLflow 3) is refused at once
with the SQLite URI to use instead."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.config.schema import TrackingConfig
from robustctl.errors import TrackingError
from robustctl.tracking.store import resolve_tracking_uri


@pytest.fixture(autouse=True)
def _mlflow_3_default(monkeypatch):
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)


@pytest.mark.parametrize("uri", ["runs", "file:///{tmp}/runs"])
def test_a_folder_uri_is_refused_with_the_sqlite_uri_of_that_folder(tmp_path, uri):
    with pytest.raises(TrackingError) as err:
        resolve_tracking_uri(TrackingConfig(uri=uri.format(tmp=tmp_path)), tmp_path)
    assert "file store" in err.value.message
    assert f"tracking.uri=sqlite:///{tmp_path / 'runs'}/mlruns.db" in err.value.hint


def test_a_folder_in_mlflow_tracking_uri_is_refused_naming_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", str(tmp_path / "runs"))
    with pytest.raises(TrackingError, match="^MLFLOW_TRACKING_URI="):
        resolve_tracking_uri(TrackingConfig(), tmp_path)


def test_train_with_a_folder_uri_exits_2_before_any_work(tiny, tmp_path):
    result = CliRunner().invoke(app, ["train", *tiny, "tracking.uri=runs"])
    assert result.exit_code == 2, result.output
    assert "tracking.uri=runs is a folder" in result.output
    assert "sqlite:///" in result.output and "MlflowException" not in result.output
    assert "MLflow run" not in result.output and not list(tmp_path.glob("checkpoints/*/*.pt"))
