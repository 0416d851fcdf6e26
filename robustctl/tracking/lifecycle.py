"""The MLflow run of a command, from start to end, in one protocol:

1. resolve the tracking store (and fail fast if a server does not answer);
2. start (or, for ``trainer.resume=true``, reopen) a run with a readable name and tags;
3. log the flattened config as params and the resolved config YAML as ``config.yaml``;
4. let the command work, logging as it goes;
5. end the run FINISHED, or FAILED / KILLED with the reason and how to resume as its ``error``
   tag, then re-raise (KILLED: Ctrl-C, SIGTERM, or submitit's exit on a SLURM pre-emption).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from robustctl import metric_keys as keys
from robustctl.config.schema import RunConfig
from robustctl.console import console
from robustctl.signals import Terminated, stop_on_sigterm
from robustctl.slurm_job import job_tags
from robustctl.tracking.provenance import (
    config_hash,
    evaluation_fingerprint,
    flatten,
    git_state,
    package_versions,
    run_fingerprint,
    training_fingerprint,
)
from robustctl.tracking.run import RunTracker
from robustctl.tracking.store import (
    check_reachable,
    open_client,
    resolve_artifact_location,
    resolve_tracking_uri,
)
from robustctl.training.variant import training_variant

RUN_ID_ATTR = "robustctl_run_id"  # set on an exception that ended (and failed) a tracked run


def run_id_of(exc: BaseException) -> str | None:
    """The MLflow run an exception was recorded on (FAILED or KILLED), or None if none was open."""
    return getattr(exc, RUN_ID_ATTR, None)


FALLBACK_DIR = "tracking-fallback"  # under work_dir: journals of runs whose server went away


def open_tracker(cfg: RunConfig) -> RunTracker:
    """A tracker on the configured store and experiment (created when missing)."""
    uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
    check_reachable(uri)
    return RunTracker(
        uri,
        cfg.tracking.experiment,
        resolve_artifact_location(cfg.tracking, uri, cfg.work_dir),
        fallback_dir=Path(cfg.work_dir, FALLBACK_DIR),
        retry_delays=tuple(cfg.tracking.retry_delays),
    )


def config_container(raw: Any) -> dict[str, Any]:
    """The composed config as plain containers, resolved, without Hydra's own node."""
    from omegaconf import OmegaConf

    container = OmegaConf.to_container(raw, resolve=True)
    container.pop("hydra", None)
    return container


def run_name(cfg: RunConfig, command: str) -> str:
    """``tracking.run_name``, else
    ``<command>-<dataset>-<model>-<loss>[-<train_defense>][-<transform>][-<defense>][-<attack>]
    -s<seed>-<time>``."""
    if cfg.tracking.run_name:
        return cfg.tracking.run_name
    parts = [command, cfg.dataset.name, cfg.model.name, cfg.loss.name]
    for group in ("train_defense", "transform", "defense", "attack"):
        name = getattr(getattr(cfg, group), "name", "none")
        if name != "none":
            parts.append(name)
    return "-".join([*parts, f"s{cfg.trainer.seed}", time.strftime("%m%d-%H%M%S")])


def identity_tags(
    container: dict[str, Any], training: str | None = None, variant: str | None = None
) -> dict[str, str]:
    """``training_fingerprint``, ``fingerprint`` (training and evaluation settings, seed aside)
    and ``variant`` (the training options that depart from the paper's:
    :func:`~robustctl.training.variant.training_variant`). ``training`` and ``variant``
    default to the config's own; ``evaluate`` passes those of the checkpoint it loads."""
    training = training or training_fingerprint(container)
    return {
        keys.TRAINING_FINGERPRINT_TAG: training,
        keys.FINGERPRINT_TAG: run_fingerprint(training, evaluation_fingerprint(container)),
        keys.VARIANT_TAG: training_variant(container) if variant is None else variant,
    }


def base_tags(
    cfg: RunConfig, command: str, chash: str, container: dict[str, Any] | None = None
) -> dict[str, str]:
    """Tags every run carries: what ran (command, groups, seed, config hash, fingerprints),
    provenance, and the SLURM job it ran in (if any)."""
    tags = {
        "command": command,
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "loss": cfg.loss.name,
        "attack": cfg.attack.name,
        "defense": cfg.defense.name,
        "threat_model": cfg.threat_model.name,
        "config_hash": chash,
        keys.SEED_TAG: str(cfg.trainer.seed),
    }
    if container is not None:
        tags.update(identity_tags(container))
    if cfg.tracking.parent_run_id:
        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id
    if cfg.tracking.experiment_tag:
        tags["experiment"] = cfg.tracking.experiment_tag
    tags.update(git_state())
    tags.update({f"version.{k}": v for k, v in package_versions().items()})
    tags.update(job_tags())
    return tags


def existing_run(cfg: RunConfig, run_id: str) -> str | None:
    """``run_id`` if that run lives in the configured store, else None (a new run is started).
    A run of another experiment than ``tracking.experiment`` is refused: resuming it would
    finish it there, not where the user asked."""
    from mlflow.exceptions import MlflowException

    from robustctl.errors import ConfigError

    client = open_client(resolve_tracking_uri(cfg.tracking, cfg.work_dir))
    try:
        run = client.get_run(run_id)
    except MlflowException:
        return None
    experiment = client.get_experiment(run.info.experiment_id).name
    if experiment != cfg.tracking.experiment:
        raise ConfigError(
            f"the run to resume ({run_id}) is in MLflow experiment {experiment!r}, but "
            f"tracking.experiment={cfg.tracking.experiment!r}",
            hint=f"resume with tracking.experiment={experiment}, or start afresh "
            "(trainer.resume=false)",
        )
    return run_id


def resume_advice(cfg: RunConfig, command: str) -> str:
    """How to continue an interrupted run of ``command`` (for its ``error`` tag): the
    experiment's or sweep's ``--resume`` for a child run, else ``trainer.resume=true``; an
    ``evaluate`` starts a new run."""
    if cfg.tracking.experiment_tag:
        return f"resume with `robustctl experiment {cfg.tracking.experiment_tag} --resume`"
    if cfg.tracking.parent_run_id:
        return f"resume the sweep: its -m command with --resume {cfg.tracking.parent_run_id}"
    if command == "evaluate":
        return "evaluate again (a new run)"
    return "resume with the same command and trainer.resume=true"


@contextlib.contextmanager
def tracked_run(
    cfg: RunConfig,
    raw: Any,
    command: str,
    *,
    resume_run_id: str | None = None,
    tags: dict[str, str] | None = None,
) -> Iterator[RunTracker]:
    """Open the MLflow run for ``command`` and close it with the right status whatever happens.

    ``tags`` are set at the start over the base tags (``evaluate``: the checkpoint's model, loss
    and training identity instead of the config's)."""
    from omegaconf import OmegaConf

    container = config_container(raw)
    tracker = open_tracker(cfg)
    tracker.start(
        run_name(cfg, command),
        base_tags(cfg, command, config_hash(container), container) | (tags or {}),
        run_id=resume_run_id,
    )
    console.print(f"MLflow run [bold]{tracker.run_id}[/] in {tracker.uri}")
    try:
        with stop_on_sigterm():
            tracker.log_params(flatten(container))
            tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(container)), "config.yaml")
            yield tracker
    except KeyboardInterrupt as exc:
        setattr(exc, RUN_ID_ATTR, tracker.run_id)
        tracker.finish("KILLED", f"interrupted by the user (Ctrl-C); {resume_advice(cfg, command)}")
        raise
    except Terminated as exc:  # SIGTERM (robustctl.signals); in SLURM: pre-empted
        setattr(exc, RUN_ID_ATTR, tracker.run_id)
        tracker.finish("KILLED", f"{exc}; {resume_advice(cfg, command)}")
        raise
    except SystemExit as exc:  # submitit's exit on SLURM's pre-emption / time-limit signal
        setattr(exc, RUN_ID_ATTR, tracker.run_id)
        tracker.finish(
            "KILLED",
            f"exited before the end (SystemExit: {exc.code}); a pre-empted SLURM job resumes "
            "here when requeued, else resume with trainer.resume=true",
        )
        raise
    except BaseException as exc:
        setattr(exc, RUN_ID_ATTR, tracker.run_id)
        tracker.finish("FAILED", f"{type(exc).__name__}: {exc}")
        raise
    else:
        tracker.finish("FINISHED")
