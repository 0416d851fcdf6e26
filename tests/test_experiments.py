"""Named experiments: one parent run, a child per sweep job, the report logged to the parent."""

from __future__ import annotations

import dataclasses
import re

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.errors import ConfigError
from robustctl.experiments import available, load_experiment
from tests.test_cli import artifact_paths, runs


@pytest.mark.slow
def test_every_experiment_file_loads_and_every_job_composes():
    import itertools

    from robustctl.composition import compose

    assert {"smoke", "paper_fashion_cpu", "paper_mnist", "paper_cifar10"} <= set(available())
    for name in available():
        exp = load_experiment(name)
        for values in itertools.product(*exp.sweep.values()):
            job = [f"{k}={v}" for k, v in zip(exp.sweep, values, strict=True)]
            compose([*exp.overrides, *job])  # raises ConfigError if a key or option is wrong


def test_unknown_experiment_lists_the_available_ones():
    with pytest.raises(ConfigError, match="smoke"):
        load_experiment("nope")


@pytest.mark.slow
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
    # the parent's page: its figures under plots/, its report tables as the description
    assert "plots/whitebox_budget_synthetic.png" in artifact_paths(client, parent.info.run_id)
    description = parent.data.tags["mlflow.note.content"]
    assert description.startswith("**robustctl experiment smoke**: smoke test")
    # each child's network is a version of its registered model, found by a readable name
    for child in children:
        name = f"robustctl-synthetic-resnet20-{child.data.tags['loss']}"
        (version,) = client.search_model_versions(f"name='{name}'")
        assert version.run_id == child.info.run_id and version.tags["experiment"] == "smoke"
    # the report's Table 1 shows each child's clean accuracy
    text = client.download_artifacts(parent.info.run_id, "report/report.md", str(tmp_path))
    report = open(text).read()
    assert "Table 1" in description and report.startswith(description.split("\n\n", 1)[1][:200])
    for child in children:
        assert (
            f"{100 * child.data.metrics['clean/accuracy']:.2f}" in report
        )  # Table 1 shows percent


SMALL = ["threat_model=graybox", "threat_model.attacks=[fgsm-0.1]"]  # the smoke sweep, cheaper


def children_by_loss(work):
    client, everything = runs(work)
    parents = [r for r in everything if r.data.tags["command"] == "experiment"]
    children = {
        r.data.tags["loss"]: r
        for r in everything
        if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}
    }
    return client, parents, children


@pytest.mark.slow
@pytest.mark.parametrize("during", ["training", "evaluation"])
def test_an_interrupted_experiment_resumes_without_training_a_child_twice(
    during, tmp_path, monkeypatch
):
    """Ctrl-C in the second child, right after its first epoch or in its gray-box stage: the
    experiment stops (parent KILLED, ce FINISHED, rce KILLED, pdm never started). ``--resume``
    reopens the same parent, skips ce, continues rce in the same run from its checkpoint (and,
    after training, past its completed stages), runs pdm, and ends with the numbers and report of
    an uninterrupted experiment; every epoch of every child is logged once."""
    import robustctl.threat_models as threat_models
    import robustctl.training.trainer as trainer

    monkeypatch.chdir(tmp_path)
    stopped: list[str] = []
    if during == "training":
        real_save = trainer.save_checkpoint

        def save_then_interrupt(state, path):
            out = real_save(state, path)
            if state["meta"]["loss"] == "rce" and state["epoch"] == 1 and not stopped:
                stopped.append("epoch 1")
                raise KeyboardInterrupt
            return out

        monkeypatch.setattr(trainer, "save_checkpoint", save_then_interrupt)
    else:
        real_stage = threat_models.STAGES["graybox"]
        real_run = real_stage.run

        def interrupt_rce(ctx):
            if ctx.cfg.loss.name == "rce" and not stopped:
                stopped.append("graybox")
                raise KeyboardInterrupt
            return real_run(ctx)

        stage = dataclasses.replace(real_stage, run=interrupt_rce)
        monkeypatch.setitem(threat_models.STAGES, "graybox", stage)
    work = tmp_path / "resumed"
    first = CliRunner().invoke(app, ["experiment", "smoke", *SMALL, f"work_dir={work}"])
    assert first.exit_code != 0 and stopped
    _, parents, children = children_by_loss(work)
    assert [p.info.status for p in parents] == ["KILLED"]
    assert {k: r.info.status for k, r in children.items()} == {"ce": "FINISHED", "rce": "KILLED"}
    ce_run, rce_run = children["ce"].info.run_id, children["rce"].info.run_id

    again = CliRunner().invoke(app, ["experiment", "smoke", "--resume", *SMALL, f"work_dir={work}"])
    assert again.exit_code == 0, again.output
    assert "already finished" in again.output
    client, parents, children = children_by_loss(work)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert {k: r.info.status for k, r in children.items()} == dict.fromkeys(
        ("ce", "rce", "pdm"), "FINISHED"
    )
    assert (children["ce"].info.run_id, children["rce"].info.run_id) == (ce_run, rce_run)
    for child in children.values():  # no epoch trained twice
        history = client.get_metric_history(child.info.run_id, "train/loss")
        assert sorted(m.step for m in history) == [1, 2]

    fresh = tmp_path / "uninterrupted"
    whole = CliRunner().invoke(app, ["experiment", "smoke", *SMALL, f"work_dir={fresh}"])
    assert whole.exit_code == 0, whole.output
    _, _, reference = children_by_loss(fresh)

    def timeless(run):
        return {k: v for k, v in run.data.metrics.items() if "time" not in k and "second" not in k}

    for loss, child in children.items():
        assert timeless(child) == pytest.approx(
            timeless(reference[loss]), rel=0, abs=0, nan_ok=True
        ), loss
    # the report logged to the parent is the uninterrupted experiment's (but for the run ids each
    # cell is traced to)
    client, (parent,), _ = children_by_loss(work)
    ref_client, (ref_parent,), _ = children_by_loss(fresh)
    for table in ("report/table1.csv", "report/table2.csv"):
        ours = client.download_artifacts(parent.info.run_id, table, str(tmp_path / "a"))
        theirs = ref_client.download_artifacts(ref_parent.info.run_id, table, str(tmp_path / "b"))
        run_ids = re.compile(r"\b[0-9a-f]{32}\b")
        assert run_ids.sub("<run>", open(ours).read()) == run_ids.sub(
            "<run>", open(theirs).read()
        ), table
