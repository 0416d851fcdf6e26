"""The offline journal without a server: what counts as an outage, and a journal replayed into a
store gives the run exactly the writes it recorded, once."""

from __future__ import annotations

import socket

from mlflow.tracking import MlflowClient

from robustctl.tracking.fallback import SYNCED, Journal, server_down, sync


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed


def test_only_an_unanswering_http_server_is_an_outage(tmp_path):
    assert server_down(f"http://127.0.0.1:{closed_port()}")
    assert not server_down(f"sqlite:///{tmp_path / 'x.db'}")  # a local store's errors are raised


def test_a_journal_replays_its_writes_in_order_once(tmp_path):
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    client = MlflowClient(uri)
    run_id = client.create_run(client.create_experiment("e")).info.run_id
    journal = Journal(tmp_path / "fallback" / run_id, "http://gone:5000", run_id)
    metric = {"key": "train/loss", "timestamp": 0}
    journal.append("log_batch", metrics=[{**metric, "value": 0.5, "step": 1}])
    journal.append("log_batch", metrics=[{**metric, "value": 0.25, "step": 2}])
    journal.append("set_tag", key="completed_stages", value="clean")
    journal.append("log_text", text="{}", artifact_file="docs/metrics.json")
    split = {"name": "digits-test", "digest": "abc", "source_type": "code", "source": "{}"}
    journal.append(
        "log_inputs", datasets=[{**split, "schema": "", "profile": "{}", "context": "test"}]
    )
    journal.append("set_terminated", status="FINISHED")

    assert sync(tmp_path / "fallback", uri) == 6  # the parent folder: every run's journal
    run = client.get_run(run_id)
    history = client.get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in history] == [(1, 0.5), (2, 0.25)]
    assert run.data.tags["completed_stages"] == "clean" and run.info.status == "FINISHED"
    assert [a.path for a in client.list_artifacts(run_id, "docs")] == ["docs/metrics.json"]
    (logged,) = run.inputs.dataset_inputs
    assert (logged.dataset.name, logged.dataset.digest, logged.tags[0].value) == (
        "digits-test",
        "abc",
        "test",
    )
    assert (tmp_path / "fallback" / run_id / SYNCED).is_file()
    assert sync(tmp_path / "fallback", uri) == 0  # already synced: nothing is sent twice


def test_a_model_logged_while_offline_is_uploaded_and_registered_by_sync(tmp_path):
    """The server went away before the model was logged: its files wait in the journal, and the
    sync makes them the run's logged model and a registered version that predicts like the
    network (it used to be left out for good)."""
    import torch

    from robustctl.models import ResNet
    from robustctl.tracking.models import load_logged_model, log_model
    from robustctl.tracking.run import RunTracker

    uri = f"sqlite:///{tmp_path / 'store.db'}"
    tracker = RunTracker(uri, "e")
    run_id = tracker.start("offline", {})
    tracker.journal = Journal(tmp_path / "fallback" / run_id, "http://gone:5000", run_id)
    network = ResNet(depth=8, num_classes=3, in_channels=1, width=4, logit_sign=-1.0).eval()
    example = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    meta = {"dataset": "synthetic", "loss": "rce"}
    assert log_model(tracker, network, example, meta, "robustctl-offline", {"seed": "4"}) is None
    tracker.finish()
    client = MlflowClient(uri)
    assert not client.get_run(run_id).outputs.model_outputs  # nothing reached the store

    sync(tmp_path / "fallback" / run_id, uri)
    (output,) = client.get_run(run_id).outputs.model_outputs
    assert client.get_logged_model(output.model_id).source_run_id == run_id
    (version,) = MlflowClient(uri, registry_uri=uri).search_model_versions(
        "name='robustctl-offline'"
    )
    assert version.run_id == run_id and version.tags["seed"] == "4"
    loaded, loaded_meta, source = load_logged_model("models:/robustctl-offline/1", uri)
    assert loaded_meta == meta and source == run_id
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.prediction_view()(example), network.prediction_view()(example), rtol=0, atol=0
        )
