"""Runs read back from the store, and which runs of a group answer a cell."""

from __future__ import annotations

import pytest

from robustctl.errors import TrackingError
from robustctl.reporting.collect import RunRecord, collect_runs
from robustctl.reporting.groups import pick_runs


def record(run_id: str, start: int, status: str = "FINISHED", metrics=None, **tags) -> RunRecord:
    base = {"dataset": "mnist", "loss": "ce"}
    return RunRecord(
        run_id, run_id, "1", status, start, start + 1, tags=base | tags, metrics=metrics or {}
    )


def test_collect_reads_status_tags_params_metrics(store):
    runs = {r.run_id: r for r in collect_runs(store.uri, experiment="robustctl")}
    assert len(runs) == 9
    ce = runs[store.ids["mnist_ce"]]
    assert (ce.status, ce.dataset, ce.loss, ce.command) == ("FINISHED", "mnist", "ce", "run")
    assert ce.metrics["clean/accuracy"] == 0.9871 and ce.params["loss.name"] == "ce"
    assert {"plots/graybox/roc.png", "plots/confusion_matrix.png"} <= set(ce.artifacts)
    failed = runs[store.ids["mnist_pdm_failed"]]
    assert failed.status == "FAILED" and failed.error.startswith("TrainingDiverged")
    assert failed.status_reason() == "failed: TrainingDiverged: loss became nan at step 12 | <bad>"


def test_experiment_run_ids_and_parent_narrow_the_selection(store):
    every = {r.run_id for r in collect_runs(store.uri)}
    assert {store.ids["other_rce"], store.ids["mnist_ce"], store.ids["child_ce"]} <= every
    assert store.ids["other_rce"] not in {
        r.run_id for r in collect_runs(store.uri, experiment="robustctl")
    }
    picked = collect_runs(store.uri, run_ids=[store.ids["fashion_ce"], store.ids["other_rce"]])
    assert {r.run_id for r in picked} == {store.ids["fashion_ce"], store.ids["other_rce"]}
    children = collect_runs(store.uri, parent_run_id=store.ids["parent"])
    assert {r.run_id for r in children} == {store.ids["child_ce"], store.ids["child_pdm"]}


def test_unknown_experiment_or_run_is_a_tracking_error(store):
    with pytest.raises(TrackingError, match="no MLflow experiment 'nope'") as info:
        collect_runs(store.uri, experiment="nope")
    assert "robustctl" in info.value.hint
    with pytest.raises(TrackingError, match="does not exist"):
        collect_runs(store.uri, run_ids=["0" * 32])


def test_latest_finished_run_with_the_metric_wins():
    runs = [
        record("old", 1, metrics={"clean/accuracy": 0.5}),
        record("new", 2, metrics={"clean/accuracy": 0.9}),
        record("newer_train_only", 3, metrics={"train/loss": 0.1}),
        record("newest_failed", 4, status="FAILED", error="boom"),
    ]
    assert [r.run_id for r in pick_runs(runs, "clean/accuracy").runs] == ["new"]
    assert pick_runs([], "clean/accuracy").reason == "not run"
    # no finished run logged the gray-box group: the failure explains the gap
    assert pick_runs(runs, "graybox/fgsm-0.1/", "graybox", "fgsm-0.1").reason == "failed: boom"


def test_only_failures_of_runs_configured_for_the_stage_count():
    runs = [
        record("tm_none", 2, status="FAILED", error="a", threat_model="none"),
        record("jsma_only", 3, status="FAILED", error="b", threat_model="graybox", attack="jsma"),
        record("killed", 1, status="KILLED", error="interrupted", threat_model="all"),
    ]
    assert (
        pick_runs(runs, "graybox/fgsm-0.1/", "graybox", "fgsm-0.1").reason == "killed: interrupted"
    )
    assert pick_runs(runs, "graybox/jsma/", "graybox", "jsma").reason == "failed: b"
    assert pick_runs(runs, "whitebox/cw_wb/", "whitebox").reason == "killed: interrupted"
    assert pick_runs(runs, "clean/accuracy").reason == "failed: b"
    running = [record("r", 1, status="RUNNING")]
    assert pick_runs(running, "clean/accuracy").reason.startswith("unfinished (running")


def test_dataset_and_loss_fall_back_to_params():
    run = RunRecord(
        "x",
        "x",
        "1",
        "FINISHED",
        0,
        None,
        tags={},
        params={"dataset.name": "digits", "loss.name": "pdm"},
    )
    assert (run.dataset, run.loss) == ("digits", "pdm")
    long = record("y", 0, status="FAILED", error="E: " + "x" * 500 + "\nsecond line")
    reason = long.status_reason()
    assert reason.startswith("failed: E: xxx") and len(reason) < 220 and "second" not in reason
