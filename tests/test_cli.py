"""The CLI end to end: runs land in the MLflow store with params, metrics, tags and artifacts."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.losses import OPTIONS as LOSS_OPTIONS

runner = CliRunner()
ROBUSTCTL = [sys.executable, "-m", "robustctl"]


def store(tmp_path: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")


def runs(tmp_path: Path):
    client = store(tmp_path)
    exp = client.get_experiment_by_name("robustctl")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def artifact_paths(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_run_logs_everything_and_evaluate_reads_it_back(tiny, tmp_path):
    result = runner.invoke(app, ["run", *tiny])
    assert result.exit_code == 0, result.output
    assert "clean/accuracy" in result.output
    client, found = runs(tmp_path)
    assert len(found) == 1
    run = found[0]
    assert run.info.status == "FINISHED"
    acc = run.data.metrics["clean/accuracy"]
    assert 0.5 < acc <= 1.0  # 4 well-separated synthetic classes
    assert {"train/loss", "train/accuracy", "val/accuracy", "lr"} <= set(run.data.metrics)
    history = client.get_metric_history(run.info.run_id, "val/accuracy")
    assert sorted(m.step for m in history) == [1, 2]
    params = run.data.params
    assert (
        params["trainer.lr"] == "0.1"
        and params["dataset.name"] == "synthetic"
        and params["data.train_size"] == "162"
    )
    tags = run.data.tags
    assert (tags["dataset"], tags["model"], tags["loss"], tags["command"]) == (
        "synthetic",
        "resnet20",
        "ce",
        "run",
    )
    assert "dataset_hash" in tags and "version.torch" in tags and tags["device"] == "cpu"
    assert run.info.run_name.startswith("run-synthetic-resnet20-ce")
    assert {
        "config.yaml",
        "metrics.json",
        "plots/confusion_matrix.png",
        "checkpoints/last.pt",
    } <= artifact_paths(client, run.info.run_id)

    # evaluate the latest training run (checkpoint downloaded from the store): same accuracy
    result = runner.invoke(app, ["evaluate", *tiny])
    assert result.exit_code == 0, result.output
    client, found = runs(tmp_path)
    ev = found[-1]
    assert ev.data.tags["command"] == "evaluate" and ev.data.tags["source_run"] == run.info.run_id
    assert ev.data.metrics["clean/accuracy"] == pytest.approx(acc)
    # the evaluation carries the checkpoint's training identity (fingerprints of the same
    # training and the same (empty) threat model: the same fingerprint)
    for tag in ("training_fingerprint", "fingerprint", "variant"):
        assert ev.data.tags[tag] == run.data.tags[tag], tag
    assert len(run.data.tags["fingerprint"]) == 12 and run.data.tags["variant"] == ""

    # another split of the same dataset is refused: training images could be test images now
    result = runner.invoke(app, ["evaluate", *tiny, "dataset.split_seed=1"])
    assert result.exit_code == 2, result.output
    assert "another split" in result.output and "split_seed" in result.output
    assert len(runs(tmp_path)[1]) == 2  # no run was opened for the refused evaluation


def test_a_full_disk_keeps_the_last_checkpoint_and_fails_the_run_in_one_line(
    tiny, tmp_path, monkeypatch
):
    """Epoch 2's checkpoint write runs out of space half-way: the run ends FAILED with a one-line
    reason (and a hint line), epoch 1's checkpoint is intact and no partial file is left behind."""
    import errno

    import torch

    from robustctl.training import load_checkpoint

    real_save, calls = torch.save, []

    def save_until_full(obj, fh, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return real_save(obj, fh, *args, **kwargs)
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", save_until_full)
    result = runner.invoke(app, ["train", *tiny, "trainer.epochs=3"])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert "previous checkpoint is intact" in result.output
    (checkpoint,) = tmp_path.glob("checkpoints/*/last.pt")
    assert load_checkpoint(checkpoint)["epoch"] == 1
    assert not list(tmp_path.glob("checkpoints/*/*.tmp"))
    _, found = runs(tmp_path)
    assert found[0].info.status == "FAILED"
    reason, hint = found[0].data.tags["error"].splitlines()  # the reason, then how to fix it
    assert reason.startswith("CheckpointError: could not write checkpoint")
    assert "No space left on device" in reason and "trainer.resume=true" in hint


def test_failed_training_marks_the_run_failed_with_the_reason(tiny, tmp_path, monkeypatch):
    from tests.training.test_trainer import NanAfter

    monkeypatch.setitem(LOSS_OPTIONS.implementations, "ce", lambda cfg: NanAfter(steps=3))
    result = runner.invoke(app, ["train", *tiny])
    assert result.exit_code == 3
    assert "loss became nan" in result.output and "Traceback" not in result.output
    _, found = runs(tmp_path)
    assert found[0].info.status == "FAILED"
    assert "TrainingDiverged" in found[0].data.tags["error"]


@pytest.mark.parametrize(
    "args, needle",
    [
        (["train", "dataset=imagenet"], "valid dataset options"),
        (["train", "trainer.lr=-1"], "trainer.lr"),
        (["train", "dataset=mnist", "dataset.root=/nonexistent/mnist"], "Looked in"),
        (["evaluate", "evaluate.checkpoint=/nonexistent/last.pt"], "does not exist"),
        (["train", "tracking.uri=http://127.0.0.1:9"], "unreachable"),
    ],
)
def test_bad_input_is_one_clear_error(args, needle, tmp_path):
    result = runner.invoke(app, [*args, f"work_dir={tmp_path}"])
    assert result.exit_code == 2, result.output
    assert "error:" in result.output and needle in result.output
    assert "Traceback" not in result.output


def test_config_prints_the_composition_and_the_options():
    result = runner.invoke(app, ["config", "model=resnet56"])
    assert result.exit_code == 0, result.output
    assert "depth: 56" in result.output
    for option in ("fashion_mnist", "cifar10", "resnet32"):
        assert option in result.output


def test_multirun_sweeps_through_hydra_into_one_store(tiny, tmp_path, monkeypatch):
    """A two-job sweep: Hydra launches one job per seed into its sweep folder, and every job's
    MLflow run lands in the one store under work_dir, nested under the sweep's parent run."""
    monkeypatch.chdir(
        tmp_path
    )  # whatever Hydra writes relative to the cwd lands in tmp_path, not the repo
    sweep_dir = tmp_path / "multirun"
    args = [a for a in tiny if not a.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={sweep_dir}",
    ]
    result = runner.invoke(app, ["train", "-m", *args])
    assert result.exit_code == 0, result.output

    # one sweep = one parent run in the MLflow UI, with exactly one child run per swept value
    _, everything = runs(tmp_path)
    parents = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1 and len(everything) == 3, [
        r.data.tags.get("command") for r in everything
    ]
    (parent,) = parents
    assert parent.data.tags["command"] == "sweep-train" and parent.info.status == "FINISHED"
    children = [r for r in everything if r is not parent]
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.tags["command"] == "train" and child.info.status == "FINISHED"
        assert child.data.params["trainer.epochs"] == "1" and {"train/loss", "val/accuracy"} <= set(
            child.data.metrics
        )
    assert sorted(r.data.params["trainer.seed"] for r in children) == ["0", "1"]

    # Hydra really ran the sweep where it was told: one job folder per value, with the value it
    # ran ...
    jobs = sorted(p.name for p in sweep_dir.iterdir() if p.is_dir())
    assert jobs == ["0", "1"]
    for num in jobs:
        assert f"trainer.seed={num}" in (sweep_dir / num / ".hydra" / "overrides.yaml").read_text()
    # ... and no job opened a store of its own there: all of them shared the one under work_dir
    assert (tmp_path / "mlruns.db").is_file()
    assert not list(sweep_dir.rglob("mlruns.db"))


def test_a_failing_sweep_job_is_recorded_and_the_sweep_goes_on(tiny, tmp_path, monkeypatch):
    """Three jobs: one fine, one whose config is refused before its run opens, one that crashes with
    an ordinary exception mid-run. The sweep finishes all three; both failures are FAILED child
    runs with their reason, the parent is FAILED with the count, and the exit code says so."""
    import robustctl.training

    real_fit = robustctl.training.fit

    def flaky_fit(cfg, *args, **kwargs):
        if cfg.trainer.lr == 0.2:
            raise RuntimeError("simulated crash")
        return real_fit(cfg, *args, **kwargs)

    monkeypatch.setattr(robustctl.training, "fit", flaky_fit)
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny if not a.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        "trainer.lr=0.1,-1,0.2",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    result = runner.invoke(app, ["train", "-m", *args])
    assert result.exit_code == 1 and "2 sweep job(s) failed" in result.output, result.output

    _, everything = runs(tmp_path)
    (parent,) = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "2 job(s) failed"
    children = [r for r in everything if r is not parent]
    assert len(children) == 3 and all(
        r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children
    )
    by_status = sorted((r.info.status, r.data.tags.get("error", "")) for r in children)
    assert [s for s, _ in by_status] == ["FAILED", "FAILED", "FINISHED"]
    errors = " | ".join(e for _, e in by_status)
    assert "trainer.lr: must be > 0" in errors and "RuntimeError: simulated crash" in errors


def test_a_job_that_failed_before_its_run_opened_is_retried_in_place_on_resume(
    tiny, tmp_path, monkeypatch
):
    """The second job's data fails to load (before its run opens): it is recorded FAILED with its
    fingerprint and seed. ``--resume`` skips the first job and retries the second into that same
    record, so the sweep ends FINISHED with two children, not a stale failure beside a success."""
    import robustctl.data

    real_load, calls = robustctl.data.load_dataset, []

    def flaky_load(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise OSError("the data disk is not mounted")
        return real_load(*args, **kwargs)

    monkeypatch.setattr(robustctl.data, "load_dataset", flaky_load)
    monkeypatch.chdir(tmp_path)
    args = [a for a in tiny if not a.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        "trainer.seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    first = runner.invoke(app, ["train", "-m", *args])
    assert first.exit_code == 1, first.output
    _, everything = runs(tmp_path)
    (parent,) = [r for r in everything if "mlflow.parentRunId" not in r.data.tags]
    (failed,) = [r for r in everything if r.info.status == "FAILED" and r is not parent]
    assert failed.data.tags["seed"] == "1" and len(failed.data.tags["fingerprint"]) == 12

    again = runner.invoke(app, ["train", "-m", *args, "--resume", parent.info.run_id])
    assert again.exit_code == 0, again.output
    _, after = runs(tmp_path)
    assert len(after) == 3 and all(r.info.status == "FINISHED" for r in after)
    retried = next(r for r in after if r.info.run_id == failed.info.run_id)
    assert "train/loss" in retried.data.metrics and "error" not in retried.data.tags


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_an_uninterrupted_run(tiny, tmp_path):
    """A real process killed with SIGKILL mid-epoch 2 resumes to the same final metrics."""
    args = [*tiny, "trainer.epochs=3"]
    env = {**os.environ, "ROBUSTCTL_FAULT_KILL_AT_STEP": "9"}  # 6 batches/epoch: mid-epoch 2
    killed = subprocess.run([*ROBUSTCTL, "train", *args], env=env, capture_output=True, text=True)
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    resumed = subprocess.run(
        [*ROBUSTCTL, "train", *args, "trainer.resume=true"], capture_output=True, text=True
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming from epoch 1/3" in resumed.stdout
    other = tmp_path / "uninterrupted"
    fresh = [a.replace(str(tmp_path), str(other)) for a in args]
    # the reference runs in a subprocess too, so both use the same torch thread count
    reference_run = subprocess.run([*ROBUSTCTL, "train", *fresh], capture_output=True, text=True)
    assert reference_run.returncode == 0, reference_run.stderr
    _, (first, *rest) = runs(tmp_path)
    assert not rest  # the resumed training continued the same MLflow run
    assert first.info.status == "FINISHED"
    _, (reference,) = runs(other)
    for key in ("train/loss", "train/accuracy", "val/accuracy"):
        assert first.data.metrics[key] == reference.data.metrics[key], key


@pytest.mark.slow
def test_run_with_every_threat_model_logs_tables_2_to_4_metrics(tiny, tmp_path):
    args = [a for a in tiny if not a.startswith(("defense=", "threat_model="))] + [
        "defense=kde",
        "threat_model=all",
        "threat_model.num_samples=30",
        "threat_model.attacks=[fgsm-0.1,bim-0.1]",
        "threat_model.resiliency_attacks=[fgsm]",
        "threat_model.resiliency_eps=[0.05,0.1]",
        "threat_model.whitebox.steps=20",
        "threat_model.fmn_wb.steps=20",
        "threat_model.blackbox.epochs=1",
        "threat_model.blackbox.proxy_model=resnet20",
    ]
    result = runner.invoke(app, ["run", *args])
    assert result.exit_code == 0, result.output
    client, (run,) = runs(tmp_path)
    metrics = run.data.metrics
    for key in (
        "kde/bandwidth",
        "graybox/fgsm-0.1/success_rate",
        "graybox/fgsm-0.1/pairs",
        "graybox/bim-0.1/distortion",
        "resiliency/fgsm/eps_0.05",
        "whitebox/cw_wb/success_rate",
        "whitebox/cw_wb/pairs",
        "blackbox/proxy/agreement",
        "blackbox/cw_wb/transfer_rate",
        "blackbox/cw_wb/transfer_rate_ci_low",
        "blackbox/cw_wb/transfer_candidates",
        "graybox/fgsm-0.1/success_rate_ci_high",
        "graybox/fgsm-0.1/distortion_ci_low",
        "whitebox/cw_wb/median_distortion",
        "embed/input_grad_norm",
        "embed/input_grad_norm_ce",
    ):
        assert key in metrics, key
    # the training loss is CE here: both gradient diagnostics differentiate the same loss
    assert run.data.tags["embed/input_grad_norm_loss"] == "ce"
    assert metrics["embed/input_grad_norm"] == pytest.approx(metrics["embed/input_grad_norm_ce"])
    # an AUC is logged exactly when enough pairs were found; otherwise the reason is a tag
    for attack in ("fgsm-0.1", "bim-0.1"):
        has_auc = f"graybox/{attack}/auc" in metrics
        assert has_auc == (metrics[f"graybox/{attack}/pairs"] >= 10)
        assert has_auc or f"graybox/{attack}/auc_reason" in run.data.tags
    assert metrics["resiliency/fgsm/eps_0.1"] <= metrics["resiliency/fgsm/eps_0.05"] + 1e-9
    paths = artifact_paths(client, run.info.run_id)
    assert {
        "plots/resiliency.png",
        "plots/graybox/fgsm-0.1_confusion.png",
        "plots/whitebox/success_vs_budget.png",
        "whitebox/cw_wb_budget_curve.json",
    } <= paths


def test_attack_without_threat_model_is_refused_before_training(tiny):
    result = runner.invoke(app, ["run", *tiny, "attack=fgsm"])
    assert result.exit_code == 2 and "threat_model=graybox" in result.output


@pytest.mark.slow
def test_joblib_sweep_jobs_write_one_sqlite_store_concurrently(tiny, tmp_path):
    """Two processes log to the same SQLite store at the same time; both runs land complete."""
    args = [a for a in tiny if not a.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        "trainer.seed=0,1",
    ]
    done = subprocess.run(
        [*ROBUSTCTL, "train", "-m", *args, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client, everything = runs(tmp_path)
    found = [r for r in everything if r.data.tags["command"] == "train"]
    assert sorted(r.data.params["trainer.seed"] for r in found) == ["0", "1"]
    assert len(everything) == 3  # plus the sweep's parent run
    for run in found:
        assert run.info.status == "FINISHED"
        assert {"train/loss", "val/accuracy"} <= set(run.data.metrics)
        assert "checkpoints/last.pt" in artifact_paths(client, run.info.run_id)


@pytest.mark.slow
def test_a_joblib_sweep_resumes_under_its_parent_run(tiny, tmp_path):
    """``train -m ... --resume PARENT`` through the joblib launcher (jobs in worker processes):
    the FINISHED job is skipped, the job whose run was killed reopens that run and continues from
    its checkpoint (here: already at the last epoch, so it trains nothing), no run is added."""
    args = [a for a in tiny if not a.startswith("trainer.epochs")] + [
        "trainer.epochs=1",
        "trainer.seed=0,1",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
    ]
    first = subprocess.run(
        [*ROBUSTCTL, "train", "-m", *args], capture_output=True, text=True, cwd=tmp_path
    )
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    client, everything = runs(tmp_path)
    (parent,) = [r for r in everything if r.data.tags["command"] == "sweep-train"]
    killed = next(r for r in everything if r.data.params.get("trainer.seed") == "1")
    client.set_terminated(killed.info.run_id, status="KILLED")  # as a pre-empted job leaves it
    client.set_terminated(parent.info.run_id, status="KILLED")

    again = subprocess.run(
        [*ROBUSTCTL, "train", "-m", *args, "--resume", parent.info.run_id],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "already finished" in again.stdout
    client, after = runs(tmp_path)
    assert len(after) == len(everything) == 3  # the parent and its two children, reopened
    assert all(r.info.status == "FINISHED" for r in after)
    history = client.get_metric_history(killed.info.run_id, "train/loss")
    assert [m.step for m in history] == [1]  # its epoch was not trained again


@pytest.mark.slow
def test_a_crash_during_evaluation_resumes_without_retraining_or_redoing_stages(
    tiny, tmp_path, monkeypatch
):
    """The white-box stage crashes: the run ends FAILED with clean, detector and gray-box logged.
    ``trainer.resume=true`` reopens the same run, trains no epoch, runs only the white-box and
    black-box stages, and ends with the metrics of an uninterrupted run."""
    import robustctl.threat_models as threat_models

    args = [a for a in tiny if not a.startswith(("defense=", "threat_model="))] + [
        "defense=kde",
        "threat_model=all",
        "threat_model.num_samples=20",
        "threat_model.attacks=[fgsm-0.1]",
        "threat_model.resiliency_attacks=[fgsm]",
        "threat_model.resiliency_eps=[0.1]",
        "threat_model.whitebox.steps=10",
        "threat_model.fmn_wb.steps=10",
        "threat_model.blackbox.epochs=1",
        "threat_model.blackbox.proxy_model=resnet20",
    ]
    calls: list[str] = []
    real = {name: stage.run for name, stage in threat_models.STAGES.items()}

    def replace_run(name, run):
        stage = dataclasses.replace(threat_models.STAGES[name], run=run)
        monkeypatch.setitem(threat_models.STAGES, name, stage)

    for name, run in real.items():
        replace_run(name, lambda ctx, n=name, r=run: calls.append(n) or r(ctx))

    def crash(ctx):
        raise RuntimeError("lost the node")

    replace_run("whitebox", crash)
    first = runner.invoke(app, ["run", *args])
    assert first.exit_code != 0 and "lost the node" in first.output
    client, (run,) = runs(tmp_path)
    assert run.info.status == "FAILED"
    assert run.data.tags["completed_stages"] == "clean,detector,graybox"

    def whitebox(ctx):
        calls.append("whitebox")
        return real["whitebox"](ctx)

    replace_run("whitebox", whitebox)
    resumed = runner.invoke(app, ["run", *args, "trainer.resume=true"])
    assert resumed.exit_code == 0, resumed.output
    assert calls == ["graybox", "whitebox", "blackbox"]  # gray-box ran once, in the first attempt
    client, (run,) = runs(tmp_path)  # the same run, reopened
    assert run.info.status == "FINISHED"
    assert run.data.tags["completed_stages"] == "clean,detector,graybox,whitebox,blackbox,sanity"
    epochs = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in epochs] == [1, 2]  # no epoch was trained again

    fresh = tmp_path / "fresh"
    whole = runner.invoke(app, ["run", *args, f"work_dir={fresh}"])
    assert whole.exit_code == 0, whole.output
    _, (uninterrupted,) = runs(fresh)

    def timeless(metrics):
        return {k: v for k, v in metrics.items() if "seconds" not in k and "time" not in k}

    assert timeless(run.data.metrics) == pytest.approx(
        timeless(uninterrupted.data.metrics), rel=0, abs=0, nan_ok=True
    )
