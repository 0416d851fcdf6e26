"""Hydra multirun: ``robustctl COMMAND -m overrides`` goes through Hydra's own sweeper and launcher.

The job function is module-level (launchers such as joblib pickle it by reference into worker
processes); the command travels inside the job's config as the top-level key ``command``. A job
that fails with a :class:`~robustctl.errors.RobustctlError` prints its error and returns None
(its MLflow run is already marked FAILED), so one bad job does not end the sweep.
"""

from __future__ import annotations

import sys
import traceback
from typing import Any

FAILED: list[str] = []  # failures of jobs run in this process (the basic, sequential launcher)


def sweep_job(raw: Any) -> dict[str, float] | None:
    import hydra

    from robustctl.config import validate
    from robustctl.console import err_console
    from robustctl.errors import RobustctlError
    from robustctl.pipeline import execute, print_summary

    command = raw.get("command")
    try:
        cfg = validate(raw, cwd=hydra.utils.get_original_cwd())
        result = execute(command, cfg, raw)
    except RobustctlError as exc:
        if raw.get("debug"):
            traceback.print_exc()
        err_console.print(f"[bold red]job failed:[/] {exc}")
        FAILED.append(str(exc))
        return None
    print_summary(result)
    return result.metrics


def open_parent(overrides: list[str], name: str, tags: dict[str, str]) -> Any:
    """Create the MLflow store and experiment once (before parallel jobs race to create them) and
    start the parent run every job of the sweep is nested under."""
    import time

    from robustctl.config import compose
    from robustctl.pipeline import open_tracker

    _, cfg = compose(overrides)
    tracker = open_tracker(cfg)
    if cfg.tracking.experiment_tag:
        tags = {**tags, "experiment": cfg.tracking.experiment_tag}
    tracker.start(f"{name}-{time.strftime('%m%d-%H%M%S')}", tags)
    return tracker


def run_sweep(command: str, overrides: list[str], name: str | None = None,
              tags: dict[str, str] | None = None) -> tuple[int, Any]:
    """Run the sweep under one parent MLflow run; returns (jobs failed in this process, parent tracker).

    The parent is left open for the caller to log to (e.g. a report) and to finish."""
    import hydra

    from robustctl.config import config_dir
    from robustctl.config.compose import check_group_overrides

    fixed = [o for o in overrides if "," not in o and not o.startswith("hydra")]
    check_group_overrides(fixed)
    parent = open_parent(fixed, name or f"sweep-{command}", {"command": f"sweep-{command}", **(tags or {}),
                                                           "sweep": " ".join(overrides)[:5000]})
    main = hydra.main(config_path=str(config_dir()), config_name="config", version_base="1.3")(sweep_job)
    saved = sys.argv
    sys.argv = ["robustctl", "--multirun", f"command={command}", f"tracking.parent_run_id={parent.run_id}", *overrides]
    FAILED.clear()
    try:
        main()
    except BaseException as exc:
        parent.finish("KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED", f"{type(exc).__name__}: {exc}")
        raise
    finally:
        sys.argv = saved
    return len(FAILED), parent
