"""Finding a checkpoint: the one to resume training from, or the one ``robustctl evaluate`` loads
(``evaluate.checkpoint``, else ``evaluate.run_id``'s logged checkpoint, else the latest finished
training run's, looked up in MLflow)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from robustctl.config.overrides import override_keys
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


@dataclass
class CheckpointSource:
    """A checkpoint found for ``evaluate``: the local ``path`` to load, the MLflow run it came
    from (or None), and how to name it to the user (``label``: the path, or
    ``runs:/<run id>/checkpoints/last.pt`` for a downloaded one). :meth:`release` deletes a
    download once it is loaded."""

    path: Path
    run_id: str | None
    label: str
    download_dir: Path | None = None

    def release(self) -> None:
        if self.download_dir is not None:
            shutil.rmtree(self.download_dir, ignore_errors=True)


def checkpoint_file(cfg: RunConfig) -> Path:
    """``evaluate.checkpoint`` as a path: absolute as given, else relative to the current folder
    (where the command runs), else to ``work_dir`` when only it holds the file."""
    given = Path(cfg.evaluate.checkpoint).expanduser()
    if given.is_absolute():
        return given
    here, under_work_dir = Path.cwd() / given, Path(cfg.work_dir) / given
    if here.exists() or not under_work_dir.exists():
        return here
    return under_work_dir


def locate_checkpoint(cfg: RunConfig, overrides: Sequence[str] = ()) -> CheckpointSource:
    """The checkpoint ``evaluate`` loads: ``evaluate.checkpoint``, else ``evaluate.run_id``'s
    logged checkpoint, else that of the latest finished training run of the experiment on the
    configured dataset (and model and loss, when the ``overrides`` name them)."""
    import tempfile

    from mlflow.exceptions import MlflowException

    from robustctl.tracking.models import quiet_downloads  # loads mlflow: only when asked
    from robustctl.tracking.store import check_reachable, open_client, resolve_tracking_uri

    if cfg.evaluate.checkpoint:
        path = checkpoint_file(cfg)
        return CheckpointSource(path, None, str(path))
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    check_reachable(uri)
    client = open_client(uri)
    run_id = cfg.evaluate.run_id or latest_training_run(client, uri, cfg, overrides)
    if cfg.evaluate.run_id:
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
    folder = Path(tempfile.mkdtemp(prefix="robustctl-checkpoint-"))
    try:
        with quiet_downloads():
            local = client.download_artifacts(run_id, LOGGED_CHECKPOINT, str(folder))
    except MlflowException as exc:
        shutil.rmtree(folder, ignore_errors=True)
        raise TrackingError(
            f"run {run_id} has no logged checkpoint ({LOGGED_CHECKPOINT}) in {uri}",
            hint="pass evaluate.checkpoint=PATH to a local checkpoint",
        ) from exc
    return CheckpointSource(Path(local), run_id, f"runs:/{run_id}/{LOGGED_CHECKPOINT}", folder)


def latest_training_run(
    client: Any, uri: str, cfg: RunConfig, overrides: Sequence[str] = ()
) -> str:
    """The id of the latest FINISHED training run (``train`` or ``run``) of the configured
    experiment on ``cfg.dataset``, and on ``cfg.model`` / ``cfg.loss`` when the ``overrides``
    set them (otherwise those are evaluate's defaults, not the user's choice)."""
    given = {key.partition(".")[0] for key in override_keys(overrides)}
    wanted = {"dataset": cfg.dataset.name}
    wanted |= {group: getattr(cfg, group).name for group in ("model", "loss") if group in given}
    exp = client.get_experiment_by_name(cfg.tracking.experiment)
    query = " and ".join(
        [
            "attributes.status = 'FINISHED'",
            "tags.command != 'evaluate'",
            *(f"tags.{tag} = '{value}'" for tag, value in wanted.items()),
        ]
    )
    runs = (
        []
        if exp is None
        else client.search_runs(
            [exp.experiment_id], query, order_by=["attributes.start_time DESC"], max_results=1
        )
    )
    if not runs:
        what = ", ".join(f"{tag} {value}" for tag, value in wanted.items())
        raise CheckpointError(
            f"no finished training run on {what} in experiment {cfg.tracking.experiment!r} at "
            f"{uri}",
            hint=(
                "train one first (`robustctl train` with the same dataset), "
                "or pass evaluate.checkpoint=PATH or evaluate.run_id=ID"
            ),
        )
    return runs[0].info.run_id
