"""Sweeps through Hydra's submitit launcher on a real SLURM cluster (see conftest.py): jobs land
as child runs under one parent, failures reach the exit code, an experiment ends with its report,
and a pre-empted job is requeued and continues its own run, training every epoch once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import tiny_overrides
from tests.slurm.conftest import PARTITION

pytestmark = pytest.mark.slurm

ROBUSTCTL = [sys.executable, "-m", "robustctl"]
ON_SLURM = [
    "hydra/launcher=submitit_slurm",
    f"hydra.launcher.partition={PARTITION}",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.timeout_min=20",
]


def tiny_sweep(work: Path, *extra: str) -> list[str]:
    """Seconds-long synthetic training runs (conftest's), one thread each, stored under
    ``work``."""
    return [
        *tiny_overrides(work),
        "trainer.num_threads=1",
        f"hydra.sweep.dir={work / 'multirun'}",
        *extra,
    ]


def robustctl(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*ROBUSTCTL, *args], capture_output=True, text=True, cwd=cwd, timeout=timeout
    )


def runs_in(work: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    experiment = client.get_experiment_by_name("robustctl")
    return client, client.search_runs([experiment.experiment_id])


def output(done: subprocess.CompletedProcess) -> str:
    return done.stdout[-4000:] + done.stderr[-4000:]


def test_a_two_job_sweep_lands_under_one_parent_with_the_basic_launchers_metrics(tmp_path):
    on_slurm, local = tmp_path / "slurm", tmp_path / "basic"
    for work, launcher in ((on_slurm, ON_SLURM), (local, [])):
        done = robustctl(tmp_path, "train", "-m", *tiny_sweep(work, "trainer.seed=0,1"), *launcher)
        assert done.returncode == 0, output(done)

    _, found = runs_in(on_slurm)
    (parent,) = [r for r in found if r.data.tags["command"] == "sweep-train"]
    children = [r for r in found if r is not parent]
    assert len(children) == 2 and parent.info.status == "FINISHED"
    job_ids = set()
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.info.status == "FINISHED"
        job_ids.add(child.data.tags["slurm/job_id"])  # each ran as its own array task
        assert child.data.tags["slurm/restarts"] == "0"
    assert len(job_ids) == 2 and all("_" in job for job in job_ids)
    # submitit's logs of each job sit in the sweep folder, named by job
    logs = {p.name for p in (on_slurm / "multirun" / ".submitit").rglob("*_log.out")}
    assert {f"{job}_0_log.out" for job in job_ids} <= logs

    # the same jobs through Hydra's basic launcher (one after another, in the sweep's own
    # process) train the same weights: SLURM changed where they ran, not what they computed
    _, reference = runs_in(local)
    by_seed = {
        r.data.params["trainer.seed"]: r for r in reference if "trainer.seed" in r.data.params
    }
    for child in children:
        twin = by_seed[child.data.params["trainer.seed"]]
        for key in ("train/loss", "val/accuracy"):
            assert child.data.metrics[key] == pytest.approx(twin.data.metrics[key], rel=1e-6), key


def test_a_failing_job_is_recorded_and_the_sweep_exit_code_says_so(tmp_path):
    """One job's config is refused inside its SLURM job (a negative learning rate): its child
    run is FAILED with the reason, the other job finishes, the parent and the exit code fail."""
    done = robustctl(tmp_path, "train", "-m", *tiny_sweep(tmp_path, "trainer.lr=0.1,-1"), *ON_SLURM)
    assert done.returncode == 1, output(done)
    assert "1 sweep job(s) failed" in done.stdout + done.stderr, output(done)
    _, found = runs_in(tmp_path)
    (parent,) = [r for r in found if r.data.tags["command"] == "sweep-train"]
    assert parent.info.status == "FAILED" and parent.data.tags["error"] == "1 job(s) failed"
    states = sorted((r.info.status, r.data.tags.get("error", "")) for r in found if r is not parent)
    assert [s for s, _ in states] == ["FAILED", "FINISHED"]
    assert "trainer.lr: must be > 0" in states[0][1]


def test_an_experiment_on_slurm_ends_with_its_report(tmp_path):
    done = robustctl(
        tmp_path,
        "experiment",
        "smoke",
        "threat_model=graybox",
        "threat_model.attacks=[fgsm-0.1]",
        "trainer.num_threads=1",
        f"work_dir={tmp_path}",
        f"hydra.sweep.dir={tmp_path / 'multirun'}",
        *ON_SLURM,
    )
    assert done.returncode == 0, output(done)
    client, found = runs_in(tmp_path)
    (parent,) = [r for r in found if r.data.tags["command"] == "experiment"]
    children = [r for r in found if r is not parent]
    assert parent.info.status == "FINISHED" and len(children) == 3
    assert all(r.info.status == "FINISHED" and "slurm/job_id" in r.data.tags for r in children)
    report = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in report
    table = Path(client.download_artifacts(parent.info.run_id, "report/report.md")).read_text()
    assert "Scope: the 3 child runs of parent run" in table
    for child in children:  # each column of the report names the run trained on the cluster
        assert f"runs `{child.info.run_id}`" in table


def squeue(job: str | None = None) -> list[tuple[str, str]]:
    """``(job id, state)`` of the queue's jobs (or of ``job``)."""
    args = ["squeue", "-h", "-o", "%i %T"] + (["-j", job] if job else [])
    out = subprocess.run(args, capture_output=True, text=True, timeout=30).stdout
    return [tuple(line.split()[:2]) for line in out.splitlines() if line.strip()]


def wait_for(what: str, check, timeout: float = 180, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def epochs_logged(work: Path) -> int:
    """The last epoch logged by the sweep's training run (0 before it exists)."""
    client = MlflowClient(f"sqlite:///{work / 'mlruns.db'}")
    if not (work / "mlruns.db").is_file() or client.get_experiment_by_name("robustctl") is None:
        return 0  # the sweep has not created its store and experiment yet
    client, found = runs_in(work)
    child = [r for r in found if r.data.tags.get("command") == "train"]
    if not child:
        return 0
    return max(
        (m.step for m in client.get_metric_history(child[0].info.run_id, "train/loss")), default=0
    )


PREEMPTIONS = {
    # what SLURM sends ``signal_delay_s`` before a time limit, and a pre-empting scheduler through
    # ``--signal``: submitit checkpoints the launcher and requeues the job itself
    "usr2": lambda job: ["scancel", "--signal=USR2", job],
    # pre-emption with PreemptMode=REQUEUE, or an admin's requeue: SLURM sends SIGTERM, then
    # SIGKILL after KillWait, and requeues the job
    "requeue": lambda job: ["scontrol", "requeue", job],
}


@pytest.mark.parametrize("preemption", list(PREEMPTIONS))
def test_a_preempted_job_is_requeued_and_resumes_its_run_training_every_epoch_once(
    tmp_path, preemption
):
    """The job is pre-empted after its second epoch and its run left KILLED. The requeued job
    (SLURM_RESTART_COUNT=1) reopens that run and continues from the epoch checkpoint: one child
    run, every epoch's metrics logged exactly once."""
    epochs = 8
    args = tiny_sweep(
        tmp_path, "trainer.seed=0", f"trainer.epochs={epochs}", "dataset.num_samples=1600"
    )
    sweep = subprocess.Popen(
        [*ROBUSTCTL, "train", "-m", *args, *ON_SLURM],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    job = None
    try:
        # this sweep's own job (an earlier test's may still be completing): submitit names its
        # folder after the job id
        folders = tmp_path / "multirun" / ".submitit"
        job = wait_for(
            "the job's submission",
            lambda: [p.name for p in folders.glob("*") if p.is_dir() and p.name[0].isdigit()],
        )[0]
        wait_for("the job to start", lambda: "RUNNING" in {s for _, s in squeue(job)})
        wait_for("two epochs logged", lambda: epochs_logged(tmp_path) >= 2, every=0.2)
        subprocess.run(PREEMPTIONS[preemption](job), check=True, timeout=30)
        # requeued jobs wait two minutes (SLURM's BeginTime) before they may start again
        wait_for("the requeue", lambda: "PENDING" in {s for _, s in squeue(job)}, timeout=60)
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
        out, _ = sweep.communicate(timeout=600)
    finally:
        if sweep.poll() is None:
            sweep.kill()
            if job is not None:
                subprocess.run(["scancel", job], check=False)
    assert sweep.returncode == 0, out[-6000:]

    client, found = runs_in(tmp_path)
    (parent,) = [r for r in found if r.data.tags["command"] == "sweep-train"]
    (child,) = [r for r in found if r is not parent]  # the restart reopened the first run
    assert child.info.status == "FINISHED" and parent.info.status == "FINISHED"
    assert child.data.tags["slurm/restarts"] == "1" and child.data.tags["slurm/job_id"] == job
    for key in ("train/loss", "val/accuracy"):
        steps = [m.step for m in client.get_metric_history(child.info.run_id, key)]
        assert sorted(steps) == list(range(1, epochs + 1)), (key, steps)

    # the first start stopped at the signal; the restart resumed from its checkpoint
    log = "".join(p.read_text() for p in (tmp_path / "multirun" / ".submitit").rglob("*_log.*"))
    resumed_at = [
        int(line.split("resuming from epoch ")[1].split("/")[0])
        for line in log.splitlines()
        if "resuming from epoch " in line
    ]
    assert len(resumed_at) == 1 and 2 <= resumed_at[0] < epochs, log[-3000:]
    if preemption == "usr2":  # submitit checkpointed the launcher, then requeued the job (the
        # SIGTERM of that requeue may cut its handler short before it logs "Requeued job")
        assert "this job is preempted" in log and "Calling checkpoint method" in log, log[-3000:]
    else:
        assert "Preempted: SLURM sent SIGTERM" in log, log[-3000:]
