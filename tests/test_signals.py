"""Ctrl-C (exit 130) and SIGTERM (``timeout``, ``docker stop``, systemd, ``kill``; exit 143) end a
command the same way: its runs are marked KILLED, the last checkpoint is kept, and one line names
the command that resumes the work."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

ROBUSTCTL = [sys.executable, "-m", "robustctl"]


def long_training(tiny: list[str]) -> list[str]:
    """~1 s epochs, far too many to finish: the signal lands in training."""
    kept = [a for a in tiny if not a.startswith(("trainer.epochs", "dataset.num_samples"))]
    return [*kept, "trainer.epochs=200", "dataset.num_samples=2000"]


def stop_after_first_checkpoint(argv: list[str], work: Path, signum: int) -> tuple[int, str]:
    """Start ``robustctl argv``, send ``signum`` once its first checkpoint is written; returns
    (exit code, stderr)."""
    # A shell without job control starts background commands with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default disposition, as a terminal
    # does.
    proc = subprocess.Popen(
        [*ROBUSTCTL, *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 120
    while not list(work.glob("checkpoints/*/last.pt")) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    return proc.returncode, err


def runs_of(work: Path) -> list:
    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    exp = client.get_experiment_by_name("robustctl")
    return client.search_runs([exp.experiment_id])


@pytest.mark.slow
def test_ctrl_c_marks_the_run_killed_and_keeps_the_last_checkpoint(tiny, tmp_path):
    from robustctl.training import load_checkpoint

    code, err = stop_after_first_checkpoint(
        ["train", *long_training(tiny)], tmp_path, signal.SIGINT
    )
    assert code == 130, err[-2000:]
    assert "interrupted (Ctrl-C)" in err and "Traceback" not in err
    (run,) = runs_of(tmp_path)
    assert run.info.status == "KILLED" and "Ctrl-C" in run.data.tags["error"]
    (checkpoint,) = tmp_path.glob("checkpoints/*/last.pt")
    assert 1 <= load_checkpoint(checkpoint)["epoch"] < 200


@pytest.mark.slow
def test_sigterm_kills_the_run_and_says_how_to_resume(tiny, tmp_path):
    args = ["train", *long_training(tiny)]
    code, err = stop_after_first_checkpoint(args, tmp_path, signal.SIGTERM)
    assert code == 143, err[-2000:]
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert line.startswith("error: terminated (SIGTERM); MLflow run "), err
    assert "Traceback" not in err
    (run,) = runs_of(tmp_path)
    assert run.info.status == "KILLED" and "SIGTERM" in run.data.tags["error"]
    assert run.info.run_id in err and "robustctl train dataset=synthetic" in err
    assert line.rstrip().endswith("dataset.num_samples=2000 trainer.resume=true")


@pytest.mark.slow
def test_sigterm_in_a_sweep_kills_the_job_and_its_parent(tiny, tmp_path):
    args = [
        "train",
        "-m",
        *long_training(tiny),
        "trainer.seed=0,1",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]
    code, err = stop_after_first_checkpoint(args, tmp_path, signal.SIGTERM)
    assert code == 143, err[-2000:]
    runs = runs_of(tmp_path)
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r is not parent]
    assert parent.info.status == "KILLED"
    assert [c.info.status for c in children] == ["KILLED"]  # the second job never started
    assert f"--resume {parent.info.run_id}" in err.replace("\n", " ")


def test_each_interrupted_command_names_the_command_that_resumes_it(tiny, monkeypatch):
    """The hint is the command to type: an experiment resumes with --resume (and its parent once
    known), an evaluate starts a new run, training resumes from its checkpoint."""
    from typer.testing import CliRunner

    import robustctl.commands
    import robustctl.experiments
    from robustctl.cli import app

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(robustctl.experiments, "run_experiment", interrupted)
    monkeypatch.setitem(robustctl.commands.COMMANDS, "evaluate", interrupted)
    monkeypatch.setitem(robustctl.commands.COMMANDS, "train", interrupted)
    runner = CliRunner()
    cases = [
        (
            ["experiment", "smoke", "trainer.epochs=1"],
            "robustctl experiment smoke trainer.epochs=1 --resume",
        ),
        (["evaluate", *tiny], "run it again (a new run): robustctl evaluate dataset=synthetic"),
        (["train", *tiny, "trainer.resume=false"], "trainer.resume=true"),
    ]
    for argv, hint in cases:
        result = runner.invoke(app, argv)
        assert result.exit_code == 130, result.output
        line = " ".join(result.output.split())  # rich folds long lines
        assert line.startswith("error: interrupted (Ctrl-C); to resume: "), line
        assert hint in line, line
        assert "trainer.resume=false" not in line  # the resumed command does not undo itself
