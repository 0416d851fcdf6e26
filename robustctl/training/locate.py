"""Finding a checkpoint: the one to resume training from, or the one ``robustctl evaluate`` loads
(``evaluate.checkpoint``, else ``evaluate.run_id``'s logged checkpoint, else the latest finished
training run's, looked up in MLflow)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from robustctl.config.schema import RunConfig
from robustctl.console import console
from robustctl.errors import CheckpointError, TrackingError
from robustctl.training.checkpoint import load_checkpoint
from robustctl.training.trainer import checkpoint_path

LOGGED_CHECKPOINT = "checkpoints/last.pt"  # where a training run logs its checkpoint artifact


def resume_state(cfg: RunConfig, chash: str) -> dict[str, Any] | None:
    """The checkpoint of this training config when ``trainer.resume=true`` and one exists."""
    if not cfg.trainer.resume:
        return None
    path = checkpoint_path(cfg, chash)
    if not path.is_file():
        console.print(
            f"[yellow]trainer.resume=true but no checkpoint at {path}; starting from scratch[/]"
        )
        return None
    return load_checkpoint(path)


def locate_checkpoint(cfg: RunConfig) -> tuple[Path, str | None]:
    """(local checkpoint path, the MLflow run it came from or None)."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from robustctl.tracking.store import check_reachable, resolve_tracking_uri

    if cfg.evaluate.checkpoint:
        return Path(cfg.work_dir, cfg.evaluate.checkpoint).expanduser(), None
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    check_reachable(uri)
    client = MlflowClient(uri)
    run_id = cfg.evaluate.run_id
    if run_id is None:
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = (
            []
            if exp is None
            else client.search_runs(
                [exp.experiment_id],
                "attributes.status = 'FINISHED' and tags.command != 'evaluate'",
                order_by=["attributes.start_time DESC"],
                max_results=1,
            )
        )
        if not runs:
            raise CheckpointError(
                f"no finished training run in experiment {cfg.tracking.experiment!r} at {uri}",
                hint=(
                    "train first (`robustctl train`), "
                    "or pass evaluate.checkpoint=PATH or evaluate.run_id=ID"
                ),
            )
        run_id = runs[0].info.run_id
    else:
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(
                f"MLflow run {run_id} does not exist in {uri}",
                hint=(
                    "copy the id from the MLflow UI (`robustctl ui`), "
                    "or pass evaluate.checkpoint=PATH"
                ),
            ) from exc
    try:
        local = client.download_artifacts(
            run_id, LOGGED_CHECKPOINT, tempfile.mkdtemp(prefix="robustctl-")
        )
    except MlflowException as exc:
        raise TrackingError(
            f"run {run_id} has no logged checkpoint ({LOGGED_CHECKPOINT}) in {uri}",
            hint="pass evaluate.checkpoint=PATH to a local checkpoint",
        ) from exc
    return Path(local), run_id
