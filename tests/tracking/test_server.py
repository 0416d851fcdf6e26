"""A real `mlflow server` on 127.0.0.1: a run logged over HTTP lands with its metrics and
artifacts."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from robustctl.cli import app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--backend-store-uri",
            f"sqlite:///{tmp_path / 'server.db'}",
            "--artifacts-destination",
            str(tmp_path / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{uri}/health", timeout=2):
                break
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start-up")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mlflow server did not answer within 90 s")
    yield uri
    proc.terminate()
    proc.wait(timeout=30)


@pytest.mark.server
def test_run_logged_to_a_real_server(mlflow_server, tiny, tmp_path):
    result = CliRunner().invoke(
        app, ["run", *tiny, "trainer.epochs=1", f"tracking.uri={mlflow_server}"]
    )
    assert result.exit_code == 0, result.output
    client = MlflowClient(mlflow_server)
    (run,) = client.search_runs([client.get_experiment_by_name("robustctl").experiment_id])
    assert run.info.status == "FINISHED" and "clean/accuracy" in run.data.metrics
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "metrics.json"} <= names
    assert not (tmp_path / "mlruns.db").exists()  # nothing went to the local default store
    assert (tmp_path / "server-artifacts").is_dir()
