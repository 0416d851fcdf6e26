"""The commands' bodies: ``train``, ``evaluate`` and ``run`` (train then evaluate, one MLflow run).

Every command follows one protocol:
1. resolve the tracking store (and fail fast if a server does not answer);
2. start (or, for ``trainer.resume=true``, reopen) an MLflow run with readable name and tags;
3. log the flattened config as params and the resolved config YAML as ``config.yaml``;
4. do the work, logging metrics as they come;
5. end the run FINISHED, or FAILED / KILLED with the reason as its ``error`` tag, then re-raise.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustctl.config.schema import RunConfig
from robustctl.console import console
from robustctl.errors import CheckpointError, ConfigError, RobustctlError, TrackingError
from robustctl.tracking import (
    RunTracker,
    check_reachable,
    resolve_artifact_location,
    resolve_tracking_uri,
)
from robustctl.tracking.provenance import config_hash, flatten, git_state, package_versions


@dataclass
class CommandResult:
    command: str
    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)   # why a metric is missing (too few pairs, budget)


# ---------------------------------------------------------------------------- run lifecycle
def open_tracker(cfg: RunConfig) -> RunTracker:
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    check_reachable(uri)
    return RunTracker(uri, cfg.tracking.experiment, resolve_artifact_location(cfg.tracking, uri, cfg.work_dir))


def config_container(raw: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(raw, resolve=True)
    container.pop("hydra", None)
    return container


def run_name(cfg: RunConfig, command: str) -> str:
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    parts = [command, cfg.dataset.name, cfg.model.name, cfg.loss.name]
    for group in ("defense", "attack"):
        name = getattr(cfg, group).name
        if name != "none":
            parts.append(name)
    return "-".join([*parts, f"s{cfg.trainer.seed}", time.strftime("%m%d-%H%M%S")])


def base_tags(cfg: RunConfig, command: str, chash: str) -> dict[str, str]:
    tags = {
        "command": command, "dataset": cfg.dataset.name, "model": cfg.model.name, "loss": cfg.loss.name,
        "attack": cfg.attack.name, "defense": cfg.defense.name, "threat_model": cfg.threat_model.name,
        "config_hash": chash, "seed": str(cfg.trainer.seed),
    }
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    if cfg.tracking.experiment_tag:
        tags["experiment"] = cfg.tracking.experiment_tag
    tags.update(git_state())
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    return tags


@contextlib.contextmanager
def tracked_run(cfg: RunConfig, raw: Any, command: str, *, resume_run_id: str | None = None) -> Iterator[RunTracker]:
    """Open the MLflow run for ``command`` and close it with the right status whatever happens."""
    from omegaconf import OmegaConf

    container = config_container(raw)
    chash = config_hash(container)
    tracker = open_tracker(cfg)
    tracker.start(run_name(cfg, command), base_tags(cfg, command, chash), run_id=resume_run_id)
    console.print(f"MLflow run [bold]{tracker.run_id}[/] in {tracker.uri}")
    try:
        tracker.log_params(flatten(container))
        tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(container)), "config.yaml")
        yield tracker
    except KeyboardInterrupt:
        tracker.finish("KILLED", "interrupted by the user (Ctrl-C); resume with trainer.resume=true")
        raise
    except BaseException as exc:
        tracker.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    else:
        tracker.finish("FINISHED")


# ---------------------------------------------------------------------------- steps
def _device_tag(tracker: RunTracker, cfg: RunConfig) -> None:
    from robustctl.training.device import resolve_device

    tracker.set_tags({"device": str(resolve_device(cfg.trainer.device))})


def _log_data(tracker: RunTracker, data: Any) -> None:
    tracker.log_params({f"data.{k}_size": str(v) for k, v in data.sizes().items()}
                       | {"data.num_classes": str(data.num_classes), "data.image_shape": "x".join(map(str, data.image_shape))})
    tracker.set_tags({"dataset_hash": data.content_hash()})


def _train_step(cfg: RunConfig, chash: str, data: Any, tracker: RunTracker, resume_state: dict | None):
    from robustctl.training import fit

    result = fit(cfg, data, chash=chash, tracker=tracker, resume_state=resume_state)
    tracker.log_metrics({"train/wall_time_s": result.wall_time_s})
    return result


def classification_loss(name: str) -> Any:
    """The classification term (ce or rce) a model was trained with: what ``embed/grad_norm`` differentiates."""
    from robustctl.config.loss_schema import LOSS_SCHEMAS
    from robustctl.losses import build_loss

    return build_loss(LOSS_SCHEMAS[name](name=name, classification=name))


def _evaluate_step(cfg: RunConfig, model: Any, data: Any, tracker: RunTracker, classification: str | None = None) -> dict[str, float]:
    """Clean accuracy + confusion matrix, embedding diagnostics (Table 1, SPEC section 9) + t-SNE plot."""
    import matplotlib.pyplot as plt

    from robustctl.evaluation.clean import evaluate_clean, plot_confusion
    from robustctl.evaluation.embedding import embedding_diagnostics, tsne_figure

    clean = evaluate_clean(model, data.x_test, data.y_test, cfg.evaluate.batch_size)
    metrics = clean.metrics()
    fig = plot_confusion(clean.confusion, data.class_names, f"{data.name} test, accuracy {clean.accuracy:.4f}")
    tracker.log_figure(fig, "plots/confusion_matrix.png")
    plt.close(fig)
    loss = classification_loss(classification or cfg.loss.classification)
    metrics.update(embedding_diagnostics(model, data.x_test, data.y_test, loss, cfg.evaluate.batch_size))
    fig = tsne_figure(clean.embeddings, data.y_test, data.class_names, metrics["embed/dbi"])
    tracker.log_figure(fig, "plots/tsne.png")
    plt.close(fig)
    tracker.log_metrics(metrics)
    tracker.log_dict({"metrics": metrics, "confusion_matrix": clean.confusion.tolist(),
                      "class_names": list(data.class_names)}, "metrics.json")
    return metrics


def _threat_step(cfg: RunConfig, model: Any, data: Any, tracker: RunTracker) -> tuple[dict[str, float], dict[str, str]]:
    """Fit the ``defense`` detector and run the ``threat_model`` stages (nothing when it is ``none``).

    Returns the metrics and the notes saying why a metric is missing."""
    if cfg.threat_model.name == "none":
        return {}, {}
    from robustctl.evaluation.threats import fit_detector, prepare, run_stages

    ctx = prepare(cfg, model, data, fit_detector(cfg, model, data))
    return run_stages(ctx, tracker), ctx.notes


def _resume_state(cfg: RunConfig, chash: str) -> dict | None:
    from robustctl.training import checkpoint_path, load_checkpoint

    if not cfg.trainer.resume:
        return None
    path = checkpoint_path(cfg, chash)
    if not path.is_file():
        console.print(f"[yellow]trainer.resume=true but no checkpoint at {path}; starting from scratch[/]")
        return None
    return load_checkpoint(path)


def train_and_maybe_evaluate(cfg: RunConfig, raw: Any, command: str) -> CommandResult:
    """``train`` (and, for ``run``, evaluate the trained model in the same MLflow run)."""
    from robustctl.data import load_dataset

    chash = config_hash(config_container(raw))
    resume_state = _resume_state(cfg, chash)
    resume_run_id = resume_state["meta"].get("run_id") if resume_state else None
    if resume_run_id:
        resume_run_id = _existing_run(cfg, resume_run_id)
    data = load_dataset(cfg.dataset, cfg.work_dir)
    with tracked_run(cfg, raw, command, resume_run_id=resume_run_id) as tracker:
        _device_tag(tracker, cfg)
        _log_data(tracker, data)
        result = _train_step(cfg, chash, data, tracker, resume_state)
        metrics = {k: v for k, v in result.final.items() if k in ("train/loss", "train/accuracy", "val/accuracy")}
        metrics["train/wall_time_s"] = result.wall_time_s
        if command == "run":
            metrics.update(_evaluate_step(cfg, result.model, data, tracker))
            threat_metrics, notes = _threat_step(cfg, result.model, data, tracker)
            metrics.update(threat_metrics)
        else:
            notes = {}
        info = {"checkpoint": str(result.checkpoint), "epochs": f"{len(result.history)} (resumed at {result.resumed_from_epoch})"
                if result.resumed_from_epoch else str(len(result.history))}
        return CommandResult(command, tracker.run_id, tracker.uri, metrics, info, notes)


def _existing_run(cfg: RunConfig, run_id: str) -> str | None:
    """The run a checkpoint came from, if it lives in this store (else a new run is started)."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    try:
        MlflowClient(resolve_tracking_uri(cfg.tracking, cfg.work_dir)).get_run(run_id)
        return run_id
    except MlflowException:
        return None


# ---------------------------------------------------------------------------- evaluate
def locate_checkpoint(cfg: RunConfig) -> tuple[Path, str | None]:
    """``evaluate.checkpoint``, else ``evaluate.run_id``'s logged checkpoint, else the latest training run's."""
    import tempfile

    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    if cfg.evaluate.checkpoint:
        return Path(cfg.work_dir, cfg.evaluate.checkpoint).expanduser(), None
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    check_reachable(uri)
    client = MlflowClient(uri)
    run_id = cfg.evaluate.run_id
    if run_id is None:
        exp = client.get_experiment_by_name(cfg.tracking.experiment)
        runs = [] if exp is None else client.search_runs(
            [exp.experiment_id], "attributes.status = 'FINISHED' and tags.command != 'evaluate'",
            order_by=["attributes.start_time DESC"], max_results=1)
        if not runs:
            raise CheckpointError(f"no finished training run in experiment {cfg.tracking.experiment!r} at {uri}",
                                  hint="train first (`robustctl train`), or pass evaluate.checkpoint=PATH or evaluate.run_id=ID")
        run_id = runs[0].info.run_id
    else:
        try:
            client.get_run(run_id)
        except MlflowException as exc:
            raise TrackingError(f"MLflow run {run_id} does not exist in {uri}",
                                hint="copy the id from the MLflow UI (`robustctl ui`), or pass evaluate.checkpoint=PATH") from exc
    try:
        local = client.download_artifacts(run_id, "checkpoints/last.pt", tempfile.mkdtemp(prefix="robustctl-"))
    except MlflowException as exc:
        raise TrackingError(f"run {run_id} has no logged checkpoint (checkpoints/last.pt) in {uri}",
                            hint="pass evaluate.checkpoint=PATH to a local checkpoint") from exc
    return Path(local), run_id


def evaluate(cfg: RunConfig, raw: Any) -> CommandResult:
    from robustctl.data import load_dataset
    from robustctl.training import load_checkpoint, model_from_checkpoint
    from robustctl.training.device import resolve_device

    path, source_run = locate_checkpoint(cfg)
    state = load_checkpoint(path)
    meta = state.get("meta", {})
    if meta.get("dataset") not in (None, cfg.dataset.name):
        raise ConfigError(f"the checkpoint was trained on {meta['dataset']!r} but dataset={cfg.dataset.name}",
                          hint=f"add dataset={meta['dataset']}")
    model = model_from_checkpoint(state, resolve_device(cfg.trainer.device), expect_model=None)
    data = load_dataset(cfg.dataset, cfg.work_dir)
    with tracked_run(cfg, raw, "evaluate") as tracker:
        tracker.set_tags({"source_checkpoint": str(path), "source_run": source_run or meta.get("run_id") or "",
                          "model": meta.get("model", {}).get("name", cfg.model.name), "loss": str(meta.get("loss", ""))})
        _device_tag(tracker, cfg)
        _log_data(tracker, data)
        trained_with = "rce" if float(meta.get("logit_sign", 1.0)) < 0 else "ce"
        metrics = _evaluate_step(cfg, model, data, tracker, classification=trained_with)
        threat_metrics, notes = _threat_step(cfg, model, data, tracker)
        metrics.update(threat_metrics)
        return CommandResult("evaluate", tracker.run_id, tracker.uri, metrics,
                             {"checkpoint": str(path), "source run": source_run or str(meta.get("run_id"))}, notes)


COMMANDS = {
    "train": lambda cfg, raw: train_and_maybe_evaluate(cfg, raw, "train"),
    "run": lambda cfg, raw: train_and_maybe_evaluate(cfg, raw, "run"),
    "evaluate": evaluate,
}


def preflight(command: str, cfg: RunConfig) -> None:
    """Combinations that cannot work, refused before any training starts."""
    if cfg.attack.name != "none" and cfg.threat_model.name == "none":
        raise ConfigError(f"attack={cfg.attack.name} needs a threat model to run in", hint="add threat_model=graybox")
    if cfg.attack.name != "none" and "graybox" not in getattr(cfg.threat_model, "stages", ["graybox"]):
        raise ConfigError(f"attack={cfg.attack.name} is a gray-box attack but threat_model={cfg.threat_model.name}",
                          hint="use threat_model=graybox (or all)")
    needs_detector = {"whitebox", "blackbox"} & set(getattr(cfg.threat_model, "stages", []))
    if needs_detector and cfg.defense.name == "none" and command != "train":
        raise ConfigError(f"threat_model stage(s) {', '.join(sorted(needs_detector))} attack a detector, but defense=none",
                          hint="add defense=kde")


def execute(command: str, cfg: RunConfig, raw: Any) -> CommandResult:
    if command not in COMMANDS:
        raise RobustctlError(f"unknown command {command!r}")
    preflight(command, cfg)
    return COMMANDS[command](cfg, raw)


def print_summary(result: CommandResult) -> None:
    from robustctl.summary import print_summary as show

    show(result.command, result.metrics, result.info, result.run_id, result.tracking_uri, result.notes)
