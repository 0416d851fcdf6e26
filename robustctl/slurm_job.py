"""The SLURM job this process runs in, read from the variables SLURM sets in a job's environment.

A job that SLURM requeues (pre-emption, or submitit's own requeue when the time limit nears: it
sends the job ``USR2`` ``signal_delay_s`` seconds before, checkpoints the launcher and calls
``scontrol requeue``) starts again from the top with ``SLURM_RESTART_COUNT`` raised by one. A
sweep job that finds it is such a restart resumes its earlier child run from the config's
checkpoint instead of starting a new one (:class:`robustctl.sweep.SweepJob`), so every epoch is
trained once however often the job is requeued.

SLURM ends a job with ``SIGTERM`` (then ``SIGKILL`` after ``KillWait``) when it pre-empts or
requeues it (``scontrol requeue``) or at its time limit: :mod:`robustctl.signals` turns that into
:class:`~robustctl.signals.Preempted`, which ends the run KILLED with the reason.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from robustctl import metric_keys as keys


@dataclass(frozen=True)
class SlurmJob:
    job_id: str  # "<array job id>_<task id>" for a task of an array job (submitit's sweeps)
    restarts: int  # SLURM_RESTART_COUNT: 0 on the first start, +1 on each requeue

    @property
    def requeued(self) -> bool:
        return self.restarts > 0

    def tags(self) -> dict[str, str]:
        return {keys.SLURM_JOB_TAG: self.job_id, keys.SLURM_RESTARTS_TAG: str(self.restarts)}


def current_job(environ: Mapping[str, str] | None = None) -> SlurmJob | None:
    """The SLURM job of this process, or None outside SLURM."""
    env = os.environ if environ is None else environ
    if "SLURM_JOB_ID" not in env:
        return None
    job_id = env["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in env and "SLURM_ARRAY_TASK_ID" in env:
        job_id = f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return SlurmJob(job_id=job_id, restarts=int(env.get("SLURM_RESTART_COUNT") or 0))


def job_tags() -> dict[str, str]:
    """The tags naming this process's SLURM job; none outside SLURM."""
    job = current_job()
    return {} if job is None else job.tags()


def is_requeued() -> bool:
    """Whether this process is a requeued SLURM job (its earlier start was cut short)."""
    job = current_job()
    return job is not None and job.requeued
