"""The SLURM job a run's process ran in: read from SLURM's environment, tagged on the run, and a
run that submitit ends on pre-emption (SystemExit) is left KILLED, to be resumed. (Real sweeps on
a cluster: tests/slurm.)"""

from __future__ import annotations

import os
import signal
import time

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

import robustctl.training.trainer as trainer_module
from robustctl.cli import app
from robustctl.signals import Preempted, Terminated, stop_on_sigterm
from robustctl.slurm_job import SlurmJob, current_job


def test_current_job_reads_slurms_environment():
    assert current_job({}) is None
    assert current_job({"SLURM_JOB_ID": "41"}) == SlurmJob("41", 0)
    array_task = {
        "SLURM_JOB_ID": "57",  # SLURM's own id of the task...
        "SLURM_ARRAY_JOB_ID": "55",
        "SLURM_ARRAY_TASK_ID": "2",  # ... shown by squeue and submitit as 55_2
        "SLURM_RESTART_COUNT": "3",
    }
    job = current_job(array_task)
    assert job == SlurmJob("55_2", 3) and job.requeued
    assert not current_job({"SLURM_JOB_ID": "41", "SLURM_RESTART_COUNT": ""}).requeued
    assert job.tags() == {"slurm/job_id": "55_2", "slurm/restarts": "3"}


def test_a_run_exited_by_submitits_preemption_handler_is_killed_and_names_its_job(
    tiny, tmp_path, monkeypatch
):
    """submitit's USR2 handler calls sys.exit mid-training: the run ends KILLED (resumable), not
    FAILED, tagged with the SLURM job; resumed, it logs every epoch once."""
    for name, value in {"SLURM_JOB_ID": "12", "SLURM_RESTART_COUNT": "0"}.items():
        monkeypatch.setenv(name, value)
    real_save = trainer_module.save_checkpoint

    def save_then_preempted(state, path):
        real_save(state, path)
        raise SystemExit(-1)

    monkeypatch.setattr(trainer_module, "save_checkpoint", save_then_preempted)
    result = CliRunner().invoke(app, ["train", *tiny])
    assert result.exit_code == -1, result.output
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlruns.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("robustctl").experiment_id])
    assert run.info.status == "KILLED" and "SystemExit: -1" in run.data.tags["error"]
    assert run.data.tags["slurm/job_id"] == "12" and run.data.tags["slurm/restarts"] == "0"
    # the exit came between epoch 1's checkpoint and its metrics (written in that order) ...
    assert client.get_metric_history(run.info.run_id, "train/loss") == []

    # ... so resuming logs epoch 1 from the checkpoint's history, then trains epoch 2 only
    monkeypatch.setattr(trainer_module, "save_checkpoint", real_save)
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    result = CliRunner().invoke(app, ["train", *tiny, "trainer.resume=true"])
    assert result.exit_code == 0 and "resuming from epoch 1/2" in result.output, result.output
    (run,) = client.search_runs([run.info.experiment_id])  # the same run, reopened
    assert run.info.status == "FINISHED" and run.data.tags["slurm/restarts"] == "1"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")]
    assert sorted(steps) == [1, 2]


def test_sigterm_in_a_slurm_job_raises_preempted_and_the_handler_is_restored(monkeypatch):
    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setenv("SLURM_JOB_ID", "12")
    with pytest.raises(Preempted, match="SIGTERM"), stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode; this is never slept through
    assert signal.getsignal(signal.SIGTERM) is before
    monkeypatch.delenv("SLURM_JOB_ID")
    with pytest.raises(Terminated, match="SIGTERM") as outside, stop_on_sigterm():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    assert not isinstance(outside.value, Preempted)  # outside SLURM: a plain termination
    assert signal.getsignal(signal.SIGTERM) is before
