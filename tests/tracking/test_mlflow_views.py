"""What a user sees of a run in MLflow: the experiment opens as model training, the splits are
dataset inputs, the trained network is a logged (and registered) model that evaluates like the
run's checkpoint, and the run description holds the summary."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import mlflow.pytorch
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.tracking.experiment import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    open_experiment,
    runs_view_url,
)
from robustctl.training import load_checkpoint, model_from_checkpoint

runner = CliRunner()


def store_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlruns.db'}"


def only_run(tmp_path: Path, command: str = "run"):
    client = MlflowClient(store_uri(tmp_path))
    exp = client.get_experiment_by_name("robustctl")
    found = client.search_runs([exp.experiment_id], f"tags.command = '{command}'")
    assert len(found) == 1
    return client, found[0]


# ---------------------------------------------------------------------- the experiment's kind
def test_new_and_older_experiments_open_as_model_training(tmp_path):
    client = MlflowClient(store_uri(tmp_path))
    new_id = open_experiment(client, "fresh")
    assert client.get_experiment(new_id).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    older = client.create_experiment("older")  # as an earlier robustctl created it: no kind
    assert EXPERIMENT_KIND_TAG not in client.get_experiment(older).tags
    assert open_experiment(client, "older") == older
    assert client.get_experiment(older).tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    chosen = client.create_experiment("chosen", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    open_experiment(client, "chosen")  # a kind the user chose is kept
    assert client.get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"


def test_ui_prints_the_runs_view_of_the_configured_experiment(tiny, tmp_path, monkeypatch):
    assert runner.invoke(app, ["train", *tiny]).exit_code == 0
    exp = MlflowClient(store_uri(tmp_path)).get_experiment_by_name("robustctl")
    launched: list[list[str]] = []
    monkeypatch.setattr("os.execv", lambda exe, argv: launched.append(argv))
    result = runner.invoke(app, ["ui", f"work_dir={tmp_path}", "--port", "5123"])
    assert result.exit_code == 0, result.output
    url = f"http://127.0.0.1:5123/#/experiments/{exp.experiment_id}/runs?workflowType=machine_learning"
    assert url in result.output
    assert runs_view_url("http://127.0.0.1:5123/", exp.experiment_id) == url
    (argv,) = launched
    assert argv[argv.index("--backend-store-uri") + 1] == store_uri(tmp_path)
    assert argv[argv.index("--port") + 1] == "5123"


# ---------------------------------------------------------------------- datasets as inputs
def test_the_three_splits_are_the_runs_dataset_inputs(tiny, tmp_path):
    assert runner.invoke(app, ["train", *tiny]).exit_code == 0
    _, run = only_run(tmp_path, "train")
    _, cfg = compose(tiny)
    data = load_dataset(cfg.dataset, cfg.work_dir)
    inputs = {i.dataset.name: i for i in run.inputs.dataset_inputs}
    assert set(inputs) == {"synthetic-train", "synthetic-val", "synthetic-test"}
    for split, context in (("train", "train"), ("val", "validation"), ("test", "test")):
        item = inputs[f"synthetic-{split}"]
        assert item.dataset.digest == run.data.tags["dataset_hash"] == data.content_hash()
        assert {t.key: t.value for t in item.tags} == {"mlflow.data.context": context}
        profile = json.loads(item.dataset.profile)
        labels = getattr(data, f"y_{split}").numpy()
        assert profile["num_rows"] == len(labels) == int(run.data.params[f"data.{split}_size"])
        assert profile["images_per_class"] == np.bincount(labels, minlength=4).tolist()
        schema = json.loads(json.loads(item.dataset.schema)["mlflow_tensorspec"]["features"])
        assert schema[0]["tensor-spec"]["shape"] == [-1, 1, 8, 8]


def test_a_run_that_loses_the_race_to_insert_a_dataset_still_links_it(tmp_path, monkeypatch):
    """Two sweep jobs log the same data at once: both look the dataset up, find nothing, and the
    later insert breaks the store's unique key. Here the first job's insert lands between the
    second job's look-up and its insert (the look-up is made to miss); the second run must
    still end up with the three inputs, linked to the one stored dataset."""
    from sqlalchemy.orm import Query

    from robustctl.tracking.inputs import dataset_inputs
    from robustctl.tracking.run import RunTracker

    _, cfg = compose(["dataset=synthetic", "dataset.num_samples=120"])
    data = load_dataset(cfg.dataset, tmp_path)
    inputs = dataset_inputs(data)
    first = RunTracker(store_uri(tmp_path), "race")
    first.start("first", {})
    second = RunTracker(store_uri(tmp_path), "race")
    second.start("second", {})
    first.log_inputs(inputs)

    real_all, missed = Query.all, []

    def look_up_misses_once(query):
        rows = real_all(query)
        if not missed and rows and type(rows[0]).__name__ == "SqlDataset":
            missed.append(len(rows))
            return []  # what the second job saw before the first job's insert
        return rows

    monkeypatch.setattr(Query, "all", look_up_misses_once)
    second.log_inputs(inputs)
    assert missed == [3]  # the race happened: the look-up missed all three stored datasets
    client = MlflowClient(store_uri(tmp_path))
    linked = client.get_run(second.run_id).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in linked) == [
        "synthetic-test",
        "synthetic-train",
        "synthetic-val",
    ]
    with sqlite3.connect(tmp_path / "mlruns.db") as db:
        (stored,) = db.execute("SELECT COUNT(*) FROM datasets").fetchone()
    assert stored == 3  # one stored dataset per split, shared by both runs


# ---------------------------------------------------------------------- models
@pytest.fixture(scope="module")
def registered_rce(tmp_path_factory):
    """One registered RCE run (RCE predicts with -Z: the prediction view must carry the sign)."""
    work = tmp_path_factory.mktemp("registered")
    overrides = [
        "dataset=synthetic",
        "dataset.num_samples=240",
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "loss=rce",
        "defense=kde",
        "threat_model=graybox",
        "threat_model.attacks=[fgsm-0.1]",
        "tracking.register_model=true",
        f"work_dir={work}",
    ]
    result = runner.invoke(app, ["run", *overrides])
    assert result.exit_code == 0, result.output
    return work, overrides


@pytest.mark.slow  # shares registered_rce: a run with a registered model, over ~10 s
def test_the_logged_model_predicts_like_the_runs_checkpoint(registered_rce):
    work, overrides = registered_rce
    client, run = only_run(work)
    (version,) = client.search_model_versions("name='robustctl-synthetic-resnet20-rce'")
    assert version.run_id == run.info.run_id
    assert version.tags["seed"] == "0"
    assert version.tags["training_fingerprint"] == run.data.tags["training_fingerprint"]
    (output,) = run.outputs.model_outputs
    assert client.get_logged_model(output.model_id).experiment_id == run.info.experiment_id
    checkpoint = next(Path(work).rglob("*.pt"))
    trained = model_from_checkpoint(load_checkpoint(checkpoint))
    x = torch.rand(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    expected = -trained.head(trained.embed(x))  # RCE: prediction logits are -Z
    mlflow.set_tracking_uri(store_uri(work))
    try:
        for uri in ("models:/robustctl-synthetic-resnet20-rce/1", f"runs:/{run.info.run_id}/model"):
            loaded = mlflow.pytorch.load_model(uri)
            torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    finally:
        mlflow.set_tracking_uri(None)


@pytest.mark.slow  # shares registered_rce: a run with a registered model, over ~10 s
def test_evaluate_a_registered_model_gives_the_checkpoints_numbers(registered_rce):
    work, overrides = registered_rce
    client, trained_run = only_run(work)
    uri = "models:/robustctl-synthetic-resnet20-rce/1"
    result = runner.invoke(app, ["evaluate", *overrides, f"evaluate.model_uri={uri}"])
    assert result.exit_code == 0, result.output
    (evaluated,) = client.search_runs([trained_run.info.experiment_id], "tags.command = 'evaluate'")
    assert evaluated.data.tags["source_model"] == uri
    assert evaluated.data.tags["source_run"] == trained_run.info.run_id
    for key in ("clean/accuracy", "graybox/fgsm-0.1/success_rate", "graybox/fgsm-0.1/auc"):
        assert evaluated.data.metrics[key] == trained_run.data.metrics[key], key


@pytest.mark.slow  # shares registered_rce: a run with a registered model, over ~10 s
def test_a_model_uri_that_is_not_a_robustctl_model_is_refused(registered_rce):
    work, overrides = registered_rce
    for uri, message in (
        ("models:/no-such-model/1", "cannot load the MLflow model"),
        ("file:///tmp/model", "is not an MLflow model URI"),
    ):
        result = runner.invoke(app, ["evaluate", *overrides, f"evaluate.model_uri={uri}"])
        assert result.exit_code != 0 and message in result.output, result.output
    both = ["evaluate.model_uri=models:/x/1", "evaluate.run_id=abc"]
    result = runner.invoke(app, ["evaluate", *overrides, *both])
    assert result.exit_code != 0 and "choose one model source" in result.output


@pytest.mark.slow  # shares registered_rce: a run with a registered model, over ~10 s
def test_a_resumed_run_keeps_its_one_logged_model(registered_rce):
    work, overrides = registered_rce
    client, run = only_run(work)
    from robustctl.tracking.lifecycle import open_tracker
    from robustctl.tracking.models import log_model

    _, cfg = compose(overrides)
    tracker = open_tracker(cfg)
    tracker.start("ignored", {}, run_id=run.info.run_id)
    trained = model_from_checkpoint(load_checkpoint(next(Path(work).rglob("*.pt"))))
    assert log_model(tracker, trained, torch.rand(2, 1, 8, 8), {}) is None
    tracker.finish()
    assert len(client.get_run(run.info.run_id).outputs.model_outputs) == 1


# ---------------------------------------------------------------------- the description
@pytest.mark.slow  # shares registered_rce: a run with a registered model, over ~10 s
def test_the_run_description_holds_the_summary_with_pair_counts(registered_rce):
    _, run = only_run(registered_rce[0])
    text = run.data.tags["mlflow.note.content"]
    metrics = run.data.metrics
    assert text.startswith("**robustctl run · synthetic · resnet20 · rce · seed 0")
    assert f"| test split | {metrics['clean/accuracy']:.4f}" in text
    row = next(line for line in text.splitlines() if line.startswith("| fgsm-0.1 |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1].startswith(f"{metrics['graybox/fgsm-0.1/success_rate']:.4f} [")
    assert cells[3].startswith(f"{metrics['graybox/fgsm-0.1/auc']:.3f}")
    assert cells[4] == str(int(metrics["graybox/fgsm-0.1/pairs"]))
