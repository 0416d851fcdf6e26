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


def start_server(folder, port: int) -> subprocess.Popen:
    """``mlflow server`` on 127.0.0.1:``port`` with its store in ``folder``, once it answers."""
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
            f"sqlite:///{folder / 'server.db'}",
            "--artifacts-destination",
            str(folder / "server-artifacts"),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return proc
        except OSError:
            if proc.poll() is not None:
                pytest.fail("mlflow server exited at start-up")
            time.sleep(0.5)
    proc.kill()
    pytest.fail("mlflow server did not answer within 90 s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    proc = start_server(tmp_path, port)
    yield f"http://127.0.0.1:{port}"
    stop_server(proc)


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


@pytest.mark.server
def test_a_server_outage_mid_run_loses_no_metric(tiny, tmp_path):
    """The server stops after the first epoch's metrics: training goes on, retries, then logs to
    ``<work_dir>/tracking-fallback/<run id>`` and says how to sync. With the server back,
    ``robustctl sync`` delivers every epoch's metrics, the artifacts and the run's end."""
    import os

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    args = [a for a in tiny if not a.startswith(("trainer.epochs", "dataset.num_samples"))]
    args += [
        "trainer.epochs=6",
        "dataset.num_samples=2000",  # ~1 s epochs: the outage starts mid-training
        f"tracking.uri={uri}",
        "tracking.retry_delays=[0.2,0.2]",
    ]
    env = dict(os.environ, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0", MLFLOW_HTTP_REQUEST_TIMEOUT="5")
    proc = subprocess.Popen(
        [sys.executable, "-m", "robustctl", "train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    client = MlflowClient(uri)
    deadline = time.time() + 120
    while time.time() < deadline:
        found = client.search_runs([e.experiment_id for e in client.search_experiments()])
        if found and "train/loss" in found[0].data.metrics:
            break
        time.sleep(0.2)
    stop_server(server)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert "unreachable" in out and "robustctl sync" in out
    (folder,) = (tmp_path / "tracking-fallback").iterdir()
    run_id = folder.name

    server = start_server(tmp_path, port)  # the same store, back again
    try:
        result = CliRunner().invoke(app, ["sync", str(folder)])
        assert result.exit_code == 0, result.output
        run = client.get_run(run_id)
        assert run.info.status == "FINISHED"
        for key in ("train/loss", "val/accuracy", "time/epoch_s"):
            assert sorted(m.step for m in client.get_metric_history(run_id, key)) == [
                1,
                2,
                3,
                4,
                5,
                6,
            ]
        assert "train/wall_time_s" in run.data.metrics  # logged after training, offline
        assert "| validation accuracy (last epoch) |" in run.data.tags["mlflow.note.content"]
        (output,) = run.outputs.model_outputs  # logged offline into the journal, sent by sync
        assert client.get_logged_model(output.model_id).source_run_id == run_id
        assert any(a.path == "checkpoints" for a in client.list_artifacts(run_id))
        assert (folder / "journal.synced.jsonl").is_file()  # nothing is sent twice
    finally:
        stop_server(server)
