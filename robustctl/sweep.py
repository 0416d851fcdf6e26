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
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from typing import Any

FAILED_STATES = ("FAILED", "KILLED")


@dataclass(frozen=True)
class SweepJob:
    """Hydra's task function for one job of a ``command`` sweep under ``parent_run_id``."""

    command: str
    parent_run_id: str
    tracking_uri: str  # the parent's store and experiment: where a job that fails before
    experiment: str  # its own run opens is recorded

    def __call__(self, raw: Any) -> dict[str, float] | None:
        import hydra

        from robustctl.commands import execute, print_summary
        from robustctl.config import validate
        from robustctl.console import err_console
        from robustctl.tracking.lifecycle import run_id_of

        try:
            cfg = validate(raw, cwd=hydra.utils.get_original_cwd())
            result = execute(self.command, cfg, raw)
        except Exception as exc:  # noqa: BLE001 - one job's failure must not end the sweep
            if raw.get("debug"):
                traceback.print_exc()
            err_console.print(f"[bold red]job failed:[/] {exc}")
            if run_id_of(exc) is None:
                self.record_failure(exc)
            return None
        print_summary(result)
        return result.metrics

    def record_failure(self, exc: BaseException) -> None:
        """A FAILED child run for a job that failed before its own run was opened
        (bad config, data)."""
        from hydra.core.hydra_config import HydraConfig

        from robustctl.tracking.run import RunTracker

        overrides = " ".join(HydraConfig.get().overrides.task) if HydraConfig.initialized() else ""
        tracker = RunTracker(self.tracking_uri, self.experiment)
        tracker.start(
            f"{self.command}-failed-{time.strftime('%m%d-%H%M%S')}",
            {
                "command": self.command,
                "mlflow.parentRunId": self.parent_run_id,
                "sweep_job": overrides[:5000],
            },
        )
        tracker.finish("FAILED", f"{type(exc).__name__}: {exc}")


def open_parent(overrides: list[str], name: str, tags: dict[str, str]) -> Any:
    """Create the MLflow store and experiment once and start the parent run of the sweep."""
    from robustctl.config import compose
    from robustctl.tracking.lifecycle import open_tracker

    _, cfg = compose(overrides)
    tracker = open_tracker(cfg)
    if cfg.tracking.experiment_tag:
        tags = {**tags, "experiment": cfg.tracking.experiment_tag}
    tracker.start(f"{name}-{time.strftime('%m%d-%H%M%S')}", tags)
    return tracker


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
    command: str, overrides: list[str], name: str | None = None, tags: dict[str, str] | None = None
) -> Any:
    """Run the sweep under one parent MLflow run; returns the parent tracker, still open for the
    caller to log to (e.g. a report) before :func:`finish_parent`."""
    from robustctl.config.composition import check_group_overrides

    fixed = [o for o in overrides if "," not in o and not o.startswith("hydra")]
    check_group_overrides(fixed)
    parent = open_parent(
        fixed,
        name or f"sweep-{command}",
        {"command": f"sweep-{command}", **(tags or {}), "sweep": " ".join(overrides)[:5000]},
    )
    try:
        job = SweepJob(command, parent.run_id, parent.uri, parent.experiment)
        launch(job, [f"tracking.parent_run_id={parent.run_id}", *overrides])
    except BaseException as exc:
        parent.finish(
            "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED",
            f"{type(exc).__name__}: {exc}",
        )
        raise
    return parent
