"""The commands' bodies as typed functions: :func:`train`, :func:`evaluate` and :func:`run`
(train, then evaluate the trained model, in one MLflow run).

Each returns a :class:`CommandResult` (what the end-of-command summary prints). The MLflow run's
lifecycle is :func:`robustctl.tracking.lifecycle.tracked_run`; finding a checkpoint is
:mod:`robustctl.tracking.locate`; the evaluation stages return
:class:`~robustctl.evaluation.result.StageResult` values that :func:`evaluate_model` logs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from robustctl import metric_keys as keys
from robustctl.config.schema import RunConfig
from robustctl.errors import ConfigError, RobustctlError
from robustctl.tracking.lifecycle import (
    config_container,
    existing_run,
    identity_tags,
    tracked_run,
)
from robustctl.tracking.provenance import config_hash
from robustctl.tracking.run import RunTracker


@dataclass
class CommandResult:
    command: str
    run_id: str
    tracking_uri: str
    metrics: dict[str, float] = field(default_factory=dict)
    info: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(
        default_factory=dict
    )  # why a metric is missing (too few pairs, budget)
    # the evaluation checklist: {check name: passed | failed: ... | not checked: ...}
    checks: dict[str, str] = field(default_factory=dict)


# ---------------------------------------------------------------------------- steps
def log_run_context(tracker: RunTracker, cfg: RunConfig, data: Any) -> None:
    """The device, the data split sizes, the dataset's content hash, and the splits as MLflow
    dataset inputs."""
    from robustctl.tracking.inputs import dataset_inputs
    from robustctl.training.device import resolve_device

    tracker.set_tags(
        {"device": str(resolve_device(cfg.trainer.device)), "dataset_hash": data.content_hash()}
    )
    tracker.log_params(
        {f"data.{k}_size": str(v) for k, v in data.sizes().items()}
        | {
            "data.num_classes": str(data.num_classes),
            "data.image_shape": "x".join(map(str, data.image_shape)),
        }
    )
    tracker.log_inputs(dataset_inputs(data))


def run_title(command: str, cfg: RunConfig, model: str, loss: str) -> str:
    """The first line of the run description: what ran, on what, with which seed."""
    parts = [f"robustctl {command}", cfg.dataset.name, model, loss, f"seed {cfg.trainer.seed}"]
    if command != "train":
        parts += [f"defense {cfg.defense.name}", f"threat model {cfg.threat_model.name}"]
    return " · ".join(parts)


def log_trained_model(cfg: RunConfig, tracker: RunTracker, trained: Any, data: Any) -> None:
    """The trained network as the run's MLflow model (``tracking.log_model``), registered as
    ``robustctl-<dataset>-<model>-<loss>`` when ``tracking.register_model``."""
    from robustctl.tracking.models import log_model, registered_name

    if not cfg.tracking.log_model:
        return
    register_as = (
        registered_name(cfg.dataset.name, cfg.model.name, cfg.loss.name)
        if cfg.tracking.register_model
        else None
    )
    tags = {
        keys.SEED_TAG: str(cfg.trainer.seed),
        keys.TRAINING_FINGERPRINT_TAG: trained.meta.get(keys.TRAINING_FINGERPRINT_TAG, ""),
        keys.VARIANT_TAG: trained.meta.get(keys.VARIANT_TAG, ""),
        "run_name": tracker.run_name or "",
    }
    if cfg.tracking.experiment_tag:
        tags["experiment"] = cfg.tracking.experiment_tag
    log_model(tracker, trained.model, data.x_test[:2], trained.meta, register_as, tags)


def evaluate_model(
    cfg: RunConfig,
    model: Any,
    data: Any,
    tracker: RunTracker,
    classification: str,
    title: str | None = None,
) -> tuple[dict[str, float], dict[str, str], dict[str, str]]:
    """Clean evaluation, then the ``threat_model`` stages against the ``defense``, then the
    sanity checks on all their metrics (:mod:`robustctl.evaluation.sanity`); each stage is
    logged as soon as it finishes and added to the run's ``completed_stages`` tag, and the run
    description (``title``, then the summary table) is rewritten with it. A reopened run
    (``trainer.resume=true`` after a crash during evaluation) skips the stages that tag lists and
    reads their metrics back from the run. Returns (metrics, notes, checks) for the summary;
    checks: {check name: ``passed`` | ``failed: ...`` | ``not checked: ...``}."""
    from robustctl.evaluation.clean_stage import clean_stage
    from robustctl.evaluation.sanity import sanity_stage
    from robustctl.inference import ModelOutputs
    from robustctl.threat_models import run_threat_model
    from robustctl.tracking.description import run_description

    metrics: dict[str, float] = {}
    notes: dict[str, str] = {}
    done = completed_stages(tracker)
    earlier = list(done)  # logged by an earlier attempt of this run: not recomputed
    if earlier:
        notes["resumed"] = f"not recomputed (logged by an earlier attempt): {', '.join(earlier)}"
    title = title or run_title("run", cfg, cfg.model.name, cfg.loss.name)
    logged = tracker.read_run() if earlier else None
    if logged is not None:  # the earlier stages' metrics, read back from the run
        metrics.update(logged.metrics)
    outputs = ModelOutputs(model, data, cfg.evaluate.batch_size)  # one pass per split, shared
    skip = frozenset(done)

    def stages() -> Any:
        if keys.CLEAN_STAGE not in skip:
            yield clean_stage(cfg, model, data, classification, outputs)
        yield from run_threat_model(cfg, model, data, outputs=outputs, skip=skip)
        if cfg.threat_model.name != "none" and keys.SANITY_STAGE not in skip:
            yield sanity_stage(metrics, cfg)  # every stage's metrics, earlier attempts' too

    tags: dict[str, str] = dict(logged.tags) if logged is not None else {}
    for result in stages():
        record_stage(tracker, result, done)
        metrics.update(result.metrics)
        notes.update(result.notes)
        tags.update(result.tags)
        tracker.set_description(run_description(title, metrics, tags))
    return metrics, notes, keys.sanity_results(tags)


def completed_stages(tracker: RunTracker) -> list[str]:
    """The evaluation stages the run has logged in full (its ``completed_stages`` tag)."""
    data = tracker.read_run()
    tags = data.tags if data is not None else {}
    return [s for s in tags.get(keys.COMPLETED_STAGES_TAG, "").split(",") if s]


def record_stage(tracker: RunTracker, result: Any, done: list[str]) -> None:
    """Log a stage's result, then mark it completed (a crash in between recomputes it)."""
    tracker.log_result(result)
    done.append(result.stage)
    tracker.set_tags({keys.COMPLETED_STAGES_TAG: ",".join(done)})


def distillation_teacher(
    cfg: RunConfig, raw: Any, command: str, then: Callable[..., tuple[dict, dict, dict]] | None
) -> tuple[Any, dict[str, str]]:
    """The teacher of a distillation student (``train_defense=distillation``) and the tags that
    name it: the run of the same config with ``train_defense=distill_teacher`` at the same
    temperature, reused when its checkpoint finished training, else trained (and, for ``run``,
    evaluated) now as its own MLflow run."""
    from omegaconf import OmegaConf, open_dict

    from robustctl.composition import validate
    from robustctl.train_defenses import teacher_config
    from robustctl.training import checkpoint_path, load_checkpoint, model_from_checkpoint
    from robustctl.training.device import resolve_device

    teacher_raw = raw.copy()
    with open_dict(teacher_raw):
        teacher_raw.train_defense = OmegaConf.structured(teacher_config(cfg.train_defense))
    teacher_cfg = validate(teacher_raw)
    path = checkpoint_path(teacher_cfg, config_hash(config_container(teacher_raw)))
    state = load_checkpoint(path) if path.is_file() else None
    if state is not None and int(state["epoch"]) >= teacher_cfg.trainer.epochs:
        run_id = str(state["meta"].get("run_id") or "")
    else:
        result = train_model(teacher_cfg, teacher_raw, command, then)
        run_id, state = result.run_id, load_checkpoint(path)
    teacher = model_from_checkpoint(state, resolve_device(cfg.trainer.device))
    return teacher, {keys.TEACHER_RUN_TAG: run_id, keys.TEACHER_CHECKPOINT_TAG: str(path)}


def train_model(
    cfg: RunConfig,
    raw: Any,
    command: str,
    then: Callable[..., tuple[dict, dict, dict]] | None = None,
) -> CommandResult:
    """Train in a new (or, on resume, the reopened) MLflow run; ``then(cfg, model, data, tracker,
    classification)`` continues in the same run (``run`` passes :func:`evaluate_model`). The run
    holds its config's checkpoint slot throughout (:func:`~robustctl.training.checkpoint_slot`)."""
    from robustctl.train_defenses import needs_teacher
    from robustctl.training import checkpoint_path, checkpoint_slot

    chash = config_hash(config_container(raw))
    teacher, teacher_tags = (
        distillation_teacher(cfg, raw, command, then)
        if needs_teacher(cfg.train_defense)
        else (None, {})
    )
    with checkpoint_slot(checkpoint_path(cfg, chash)):
        return _train_in_slot(cfg, raw, command, then, chash, teacher, teacher_tags)


def _train_in_slot(
    cfg: RunConfig,
    raw: Any,
    command: str,
    then: Callable[..., tuple[dict, dict, dict]] | None,
    chash: str,
    teacher: Any,
    teacher_tags: dict[str, str],
) -> CommandResult:
    """:func:`train_model`'s work once the checkpoint slot is held: read the checkpoint to resume
    from, open (or reopen) the run, train, log the model, then ``then``."""
    from robustctl.data import load_dataset
    from robustctl.tracking.description import run_description
    from robustctl.tracking.locate import resume_state
    from robustctl.training import fit

    identity = identity_tags(config_container(raw))
    provenance = {key: identity[key] for key in (keys.TRAINING_FINGERPRINT_TAG, keys.VARIANT_TAG)}
    state = resume_state(cfg, chash)
    # the run to reopen: the one an experiment resume names, else the checkpoint's own
    resume_run_id = cfg.tracking.resume_run_id or (state["meta"].get("run_id") if state else None)
    if resume_run_id:
        resume_run_id = existing_run(cfg, resume_run_id)
    data = load_dataset(cfg.dataset, cfg.work_dir)
    with tracked_run(cfg, raw, command, resume_run_id=resume_run_id, tags=teacher_tags) as tracker:
        log_run_context(tracker, cfg, data)
        trained = fit(
            cfg,
            data,
            chash=chash,
            tracker=tracker,
            resume_state=state,
            provenance=provenance,
            teacher=teacher,
        )
        tracker.log_metrics({keys.TRAIN_WALL_TIME: trained.wall_time_s})
        tracker.set_tags(trained.meta["step_settings"])
        log_trained_model(cfg, tracker, trained, data)
        metrics = {
            k: v
            for k, v in trained.final.items()
            if k in (keys.TRAIN_LOSS, keys.TRAIN_ACCURACY, keys.VAL_ACCURACY)
        }
        metrics[keys.TRAIN_WALL_TIME] = trained.wall_time_s
        notes: dict[str, str] = {}
        checks: dict[str, str] = {}
        title = run_title(command, cfg, cfg.model.name, cfg.loss.name)
        if then is not None:
            more, notes, checks = then(
                cfg, trained.model, data, tracker, cfg.loss.classification, title
            )
            metrics.update(more)
        else:
            tracker.set_description(run_description(title, metrics))
        epochs = str(len(trained.history))
        if trained.resumed_from_epoch:
            epochs += f" (resumed at {trained.resumed_from_epoch})"
        info = {"checkpoint": str(trained.checkpoint), "epochs": epochs}
        return CommandResult(command, tracker.run_id, tracker.uri, metrics, info, notes, checks)


def check_split(meta: dict[str, Any], data: Any, path: Any) -> None:
    """Refuse to evaluate a model on a split other than the one it was trained with: another
    ``split_seed``, ``val_fraction`` or ``train_limit`` can move training images into the
    validation split that selects the detector's bandwidth, or into the test split."""
    trained_on = meta.get("dataset_hash")
    current = data.content_hash()
    if trained_on is not None and trained_on != current:
        raise ConfigError(
            f"{path} was trained on another split of {data.name} "
            f"(dataset hash {trained_on}, this config gives {current})",
            hint="use the dataset.* settings of its training run "
            "(split_seed, val_fraction, train_limit, test_limit)",
        )


# ---------------------------------------------------------------------------- commands
def train(cfg: RunConfig, raw: Any, overrides: Sequence[str] = ()) -> CommandResult:
    """Train only; a checkpoint each epoch."""
    return train_model(cfg, raw, "train")


def run(cfg: RunConfig, raw: Any, overrides: Sequence[str] = ()) -> CommandResult:
    """Train, then evaluate the trained model, in one MLflow run (the main job)."""
    return train_model(cfg, raw, "run", then=evaluate_model)


@dataclass
class ModelToEvaluate:
    """What ``evaluate`` loaded: the model (on the configured device, eval mode), its checkpoint
    description ``meta``, how to name where it came from (``label``) and its source tags."""

    model: Any
    meta: dict[str, Any]
    label: str
    tags: dict[str, str]


def model_to_evaluate(cfg: RunConfig, overrides: Sequence[str] = ()) -> ModelToEvaluate:
    """From ``evaluate.model_uri`` (an MLflow model), else the checkpoint
    :func:`~robustctl.tracking.locate.locate_checkpoint` finds (a downloaded one is deleted once
    loaded)."""
    from robustctl.tracking.locate import locate_checkpoint
    from robustctl.training import load_checkpoint, model_from_checkpoint
    from robustctl.training.device import resolve_device

    device = resolve_device(cfg.trainer.device)
    if cfg.evaluate.model_uri:
        from robustctl.tracking.models import load_logged_model
        from robustctl.tracking.store import check_reachable, resolve_tracking_uri

        uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
        check_reachable(uri)
        model, meta, source_run = load_logged_model(cfg.evaluate.model_uri, uri, device)
        tags = {"source_model": cfg.evaluate.model_uri, "source_run": source_run or ""}
        return ModelToEvaluate(model, meta, cfg.evaluate.model_uri, tags)
    source = locate_checkpoint(cfg, overrides)
    try:
        state = load_checkpoint(source.path)
    finally:
        source.release()
    model = model_from_checkpoint(state, device)
    tags = {"source_checkpoint": source.label, "source_run": source.run_id or ""}
    return ModelToEvaluate(model, state.get("meta", {}), source.label, tags)


def evaluate(cfg: RunConfig, raw: Any, overrides: Sequence[str] = ()) -> CommandResult:
    """Evaluate a trained model (checkpoint or MLflow model) in a new MLflow run tagged with its
    source, under the checkpoint's training settings (:mod:`robustctl.evaluate_config`)."""
    from robustctl.data import load_dataset
    from robustctl.evaluate_config import (
        adopt_training_config,
        checkpoint_training,
        refuse_contradictions,
    )

    loaded = model_to_evaluate(cfg, overrides)
    meta, where = loaded.meta, loaded.label
    if meta.get("dataset") not in (None, cfg.dataset.name):
        raise ConfigError(
            f"{where} was trained on {meta['dataset']!r} but dataset={cfg.dataset.name}",
            hint=f"add dataset={meta['dataset']}",
        )
    training = checkpoint_training(meta)
    refuse_contradictions(config_container(raw), training, overrides, where)
    raw, cfg = adopt_training_config(cfg, overrides, training)
    data = load_dataset(cfg.dataset, cfg.work_dir)
    check_split(meta, data, where)
    trained = meta.get(keys.TRAINING_FINGERPRINT_TAG) or meta.get("config_hash") or "unknown"
    source = dict(loaded.tags)
    source["source_run"] = source["source_run"] or str(meta.get("run_id") or "")
    model_name = meta.get("model", {}).get("name", cfg.model.name)
    loss = str(meta.get("loss", ""))
    tags = {
        **source,
        "model": model_name,
        "loss": loss,
        # the checkpoint's training identity (an old checkpoint: its seeded config hash)
        **identity_tags(
            config_container(raw),
            training=trained,
            variant=meta.get(keys.VARIANT_TAG, ""),
        ),
    }
    with tracked_run(cfg, raw, "evaluate", tags=tags) as tracker:
        log_run_context(tracker, cfg, data)
        trained_with = "rce" if float(meta.get("logit_sign", 1.0)) < 0 else "ce"
        title = run_title("evaluate", cfg, model_name, loss)
        metrics, notes, checks = evaluate_model(
            cfg, loaded.model, data, tracker, trained_with, title
        )
        return CommandResult(
            "evaluate",
            tracker.run_id,
            tracker.uri,
            metrics,
            {"model": where, "source run": source["source_run"]},
            notes,
            checks,
        )


COMMANDS: dict[str, Callable[[RunConfig, Any, Sequence[str]], CommandResult]] = {
    "train": train,
    "run": run,
    "evaluate": evaluate,
}


def preflight(command: str, cfg: RunConfig) -> None:
    """Combinations that cannot work, refused before any training starts."""
    from robustctl.threat_models import STAGES

    stages = set(getattr(cfg.threat_model, "stages", []))
    if cfg.attack.name != "none" and cfg.threat_model.name == "none":
        raise ConfigError(
            f"attack={cfg.attack.name} needs a threat model to run in",
            hint="add threat_model=graybox",
        )
    if cfg.attack.name != "none" and keys.GRAYBOX not in stages:
        raise ConfigError(
            f"attack={cfg.attack.name} is a gray-box attack "
            f"but threat_model={cfg.threat_model.name}",
            hint="use threat_model=graybox (or all)",
        )
    needs_detector = {name for name in stages if STAGES[name].needs_detector}
    if needs_detector and cfg.defense.name == "none" and command != "train":
        raise ConfigError(
            f"threat_model stage(s) {', '.join(sorted(needs_detector))} attack a detector, "
            "but defense=none",
            hint="add defense=kde",
        )


def execute(command: str, cfg: RunConfig, raw: Any, overrides: Sequence[str] = ()) -> CommandResult:
    """Run ``command`` on the composed config; ``overrides``: what the user wrote (``evaluate``
    tells a chosen setting from a default by them)."""
    if command not in COMMANDS:
        raise RobustctlError(f"unknown command {command!r} — valid: {', '.join(COMMANDS)}")
    preflight(command, cfg)
    return COMMANDS[command](cfg, raw, tuple(overrides))


def print_summary(result: CommandResult) -> None:
    from robustctl.summary import print_summary as show

    show(
        result.command,
        result.metrics,
        result.info,
        result.run_id,
        result.tracking_uri,
        result.notes,
        checks=result.checks,
    )
