"""Hydra multirun: ``robustctl COMMAND -m overrides`` goes through Hydra's own sweeper and launcher.

A sweep is one parent MLflow run with every job's run nested under it (``tracking.parent_run_id``):

- :func:`open_parent` creates the store and experiment once (before parallel jobs race to) and
  starts the parent run;
- each job is a :class:`SweepJob` (a module-level class, so launchers that pickle the task —
  joblib, submitit — send it by reference with its command). A job that fails for any reason
  (not Ctrl-C) prints its error, its MLflow run is marked FAILED with the reason (a FAILED run is
  created for a job that failed before its run was opened), and the sweep goes on;
- :func:`finish_parent` counts the children's final states in MLflow (so failures of jobs in other
  processes count too) and ends the parent FAILED when any child failed.

Resuming (``robustctl experiment NAME --resume``): the parent run is reopened and every job first
looks for its earlier child, the parent's child with the same ``fingerprint`` and ``seed`` tags.
A FINISHED one is kept and the job skipped; any other (interrupted, failed) is reopened with
``trainer.resume=true``, so training continues from the config's checkpoint and evaluation skips
the stages the run completed; a job without an earlier child runs as usual.

A SLURM job that was requeued (pre-empted, or requeued by submitit as its time limit neared; see
:mod:`robustctl.slurm_job`) does the same on its own: its restart finds the child run its first
start left KILLED and continues it from the last epoch checkpoint.
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

FAILED_STATES = ("FAILED", "KILLED")
PARENT_RUN_ATTR = "robustctl_parent_run_id"  # set on an exception that ended a sweep's parent run


def parent_run_of(exc: BaseException) -> str | None:
    """The parent run of the sweep an exception ended (KILLED or FAILED), None outside sweeps."""
    return getattr(exc, PARENT_RUN_ATTR, None)


@dataclass(frozen=True)
class SweepJob:
    """Hydra's task function for one job of a ``command`` sweep under ``parent_run_id``."""

    command: str
    parent_run_id: str
    tracking_uri: str  # the parent's store and experiment: where a job that fails before
    experiment: str  # its own run opens is recorded
    resume: bool = False  # an earlier attempt of the sweep ran under the same parent

    def __call__(self, raw: Any) -> dict[str, float] | None:
        import hydra

        from robustctl.commands import execute, print_summary
        from robustctl.composition import validate
        from robustctl.console import console, err_console
        from robustctl.slurm_job import is_requeued
        from robustctl.tracking.lifecycle import run_id_of

        earlier = None
        if self.resume or is_requeued():
            earlier = self.earlier_child(raw)
            if earlier is not None and earlier.info.status == "FINISHED":
                console.print(f"[green]already finished[/] in run {earlier.info.run_id}: skipped")
                return dict(earlier.data.metrics)
            raw.trainer.resume = True  # continue from this config's checkpoint, if any
            if earlier is not None:
                raw.tracking.resume_run_id = earlier.info.run_id
        try:
            cfg = validate(raw, cwd=hydra.utils.get_original_cwd())
            result = execute(self.command, cfg, raw, job_overrides())
        except Exception as exc:  # noqa: BLE001 - one job's failure must not end the sweep
            if raw.get("debug"):
                traceback.print_exc()
            err_console.print(f"[bold red]job failed:[/] {exc}")
            if run_id_of(exc) is None:
                self.record_failure(exc, raw, None if earlier is None else earlier.info.run_id)
            return None
        print_summary(result)
        return result.metrics

    def earlier_child(self, raw: Any) -> Any | None:
        """The parent's child run of this job's config (same fingerprint and seed): a FINISHED
        one if there is any, else the latest; None when the job never ran."""
        from robustctl import metric_keys as keys
        from robustctl.tracking.lifecycle import config_container, identity_tags
        from robustctl.tracking.store import open_client

        fingerprint = identity_tags(config_container(raw))[keys.FINGERPRINT_TAG]
        client = open_client(self.tracking_uri)
        experiment = client.get_experiment_by_name(self.experiment)
        found = client.search_runs(
            [experiment.experiment_id],
            f"tags.`mlflow.parentRunId` = '{self.parent_run_id}' "
            f"and tags.{keys.FINGERPRINT_TAG} = '{fingerprint}' "
            f"and tags.{keys.SEED_TAG} = '{raw.trainer.seed}'",
            order_by=["attributes.start_time DESC"],
        )
        finished = [run for run in found if run.info.status == "FINISHED"]
        return (finished or found or [None])[0]

    def record_failure(self, exc: BaseException, raw: Any, earlier: str | None = None) -> None:
        """A FAILED child run for a job that failed before its own run was opened (bad config,
        data), tagged with the job's fingerprint and seed when its config gets that far, so a
        resumed sweep finds it (and reuses it: ``earlier``) instead of adding another."""
        from robustctl import metric_keys as keys
        from robustctl.tracking.lifecycle import config_container, identity_tags
        from robustctl.tracking.run import RunTracker

        overrides = " ".join(job_overrides())
        tags = {
            "command": self.command,
            "mlflow.parentRunId": self.parent_run_id,
            "sweep_job": overrides[:5000],
        }
        try:
            tags |= identity_tags(config_container(raw))
            tags[keys.SEED_TAG] = str(raw.trainer.seed)
        except Exception:  # noqa: BLE001 - a config too broken to identify stays untagged
            pass
        tracker = RunTracker(self.tracking_uri, self.experiment)
        tracker.start(f"{self.command}-failed-{time.strftime('%m%d-%H%M%S')}", tags, earlier)
        tracker.finish("FAILED", f"{type(exc).__name__}: {exc}")


def job_overrides() -> list[str]:
    """The overrides that made this sweep job (the fixed ones and its swept values)."""
    from hydra.core.hydra_config import HydraConfig

    return list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []


def open_parent(
    overrides: list[str], name: str, tags: dict[str, str], run_id: str | None = None
) -> Any:
    """Create the MLflow store and experiment once and start the parent run of the sweep (or
    reopen ``run_id``, an earlier parent being resumed)."""
    from robustctl.composition import compose
    from robustctl.tracking.lifecycle import open_tracker

    _, cfg = compose(overrides)
    tracker = open_tracker(cfg)
    if cfg.tracking.experiment_tag:
        tags = {**tags, "experiment": cfg.tracking.experiment_tag}
    tracker.start(f"{name}-{time.strftime('%m%d-%H%M%S')}", tags, run_id=run_id)
    return tracker


def latest_parent(overrides: list[str], experiment_tag: str) -> str:
    """The run id of the latest parent run of the experiment named ``experiment_tag`` in the
    store the overrides configure; a :class:`~robustctl.errors.TrackingError` when none."""
    from robustctl.composition import compose
    from robustctl.errors import TrackingError
    from robustctl.tracking.lifecycle import open_tracker

    _, cfg = compose(overrides)
    tracker = open_tracker(cfg)
    found = tracker.client.search_runs(
        [tracker.experiment_id],
        f"tags.command = 'experiment' and tags.experiment = '{experiment_tag}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not found:
        raise TrackingError(
            f"no earlier run of experiment {experiment_tag!r} in {tracker.uri}",
            hint="run it without --resume first (or pass the store's work_dir / tracking.uri)",
        )
    return found[0].info.run_id


def launch(job: SweepJob, overrides: list[str]) -> None:
    """Hand the overrides to Hydra's sweeper and launcher, as ``--multirun`` on the command line
    would.

    Uses Hydra's own entry (``_run_hydra``, what ``@hydra.main`` calls; hydra-core is pinned < 1.4)
    with an argument list of ours, so the process's ``sys.argv`` is never touched."""
    from hydra._internal.utils import _run_hydra, get_args_parser

    from robustctl.config import config_dir

    parser = get_args_parser()
    args = parser.parse_args(["--multirun", *overrides])
    _run_hydra(
        args=args,
        args_parser=parser,
        task_function=job,
        config_path=str(config_dir()),
        config_name="config",
    )


def children_states(parent: Any, run_id: str) -> dict[str, int]:
    """``{status: count}`` of the child runs of ``run_id``."""
    client = parent.client
    runs = client.search_runs(
        [parent.experiment_id], f"tags.`mlflow.parentRunId` = '{run_id}'", max_results=10000
    )
    states: dict[str, int] = {}
    for run in runs:
        states[run.info.status] = states.get(run.info.status, 0) + 1
    return states


def finish_parent(parent: Any, what: str = "job") -> int:
    """End the parent run: FAILED with the count when any child failed or was killed, else
    FINISHED. Returns the number of failed children."""
    run_id = parent.run_id
    failed = sum(
        n for status, n in children_states(parent, run_id).items() if status in FAILED_STATES
    )
    parent.finish(
        "FAILED" if failed else "FINISHED", f"{failed} {what}(s) failed" if failed else None
    )
    return failed


def run_sweep(
    command: str,
    overrides: list[str],
    name: str | None = None,
    tags: dict[str, str] | None = None,
    resume_parent: str | None = None,
) -> Any:
    """Run the sweep under one parent MLflow run; returns the parent tracker, still open for the
    caller to log to (e.g. a report) before :func:`finish_parent`. ``resume_parent``: reopen that
    parent and let each job skip or resume its earlier child (module docstring)."""
    from robustctl.composition import check_group_overrides

    fixed = [o for o in overrides if "," not in o and not o.startswith("hydra")]
    check_group_overrides(fixed)
    parent = open_parent(
        fixed,
        name or f"sweep-{command}",
        {"command": f"sweep-{command}", **(tags or {}), "sweep": " ".join(overrides)[:5000]},
        run_id=resume_parent,
    )
    try:
        job = SweepJob(
            command, parent.run_id, parent.uri, parent.experiment, resume=bool(resume_parent)
        )
        launch(job, [f"tracking.parent_run_id={parent.run_id}", *overrides])
    except BaseException as exc:
        from robustctl.signals import Terminated

        interrupted = isinstance(exc, KeyboardInterrupt | Terminated)
        setattr(exc, PARENT_RUN_ATTR, parent.run_id)
        parent.finish("KILLED" if interrupted else "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    return parent
