"""Config dataclasses of the single-schema groups (trainer, tracking, evaluate) and
:class:`RunConfig`, the whole composed config. The other groups' configs live beside the code they
configure, in each package's option registry (``robustctl.data.OPTIONS``, ...).

``__post_init__`` checks ranges, so a negative learning rate or a batch size of 0 is refused with
the key's full name. :mod:`robustctl.options` registers every group's options with Hydra.

Pure Python: importing this module must not import torch or mlflow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from robustctl.config.validation import require as _require

# --------------------------------------------------------------------------------------- trainer
SCHEDULES = ("cosine", "step", "constant")
DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")


@dataclass
class TrainerConfig:
    """SGD with momentum (paper Appendix B defaults) and the training-loop knobs."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.002
    schedule: str = "cosine"
    milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    gamma: float = 0.1
    warmup_epochs: int = 0
    seed: int = 0
    device: str = "auto"
    num_threads: int | None = None
    max_batches: int | None = None
    resume: bool = False
    checkpoint_dir: str = "checkpoints"
    eval_batch_size: int = 512
    # speed only (robustctl/training/speed.py): autocast dtype of the training step (auto = bf16 on
    # CUDA, fp32 elsewhere; evaluation is always fp32), channels_last memory format (null = on for
    # CUDA), torch.compile of the training forward pass
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "trainer.epochs", f"must be >= 1, got {self.epochs}")
        _require(self.batch_size >= 1, "trainer.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(
            self.eval_batch_size >= 1,
            "trainer.eval_batch_size",
            f"must be >= 1, got {self.eval_batch_size}",
        )
        _require(self.lr > 0, "trainer.lr", f"must be > 0, got {self.lr}")
        _require(
            0 <= self.momentum < 1, "trainer.momentum", f"must be in [0, 1), got {self.momentum}"
        )
        _require(
            self.weight_decay >= 0, "trainer.weight_decay", f"must be >= 0, got {self.weight_decay}"
        )
        _require(
            self.schedule in SCHEDULES,
            "trainer.schedule",
            f"must be one of {', '.join(SCHEDULES)}; got {self.schedule!r}",
        )
        _require(
            all(0 < m < 1 for m in self.milestones),
            "trainer.milestones",
            f"must be fractions of training in (0, 1), got {list(self.milestones)}",
        )
        _require(0 < self.gamma <= 1, "trainer.gamma", f"must be in (0, 1], got {self.gamma}")
        _require(
            0 <= self.warmup_epochs < self.epochs,
            "trainer.warmup_epochs",
            f"must be in [0, epochs), got {self.warmup_epochs}",
        )
        _require(
            self.device in DEVICES,
            "trainer.device",
            f"must be one of {', '.join(DEVICES)}; got {self.device!r}",
        )
        _require(
            self.precision in PRECISIONS,
            "trainer.precision",
            f"must be one of {', '.join(PRECISIONS)}; got {self.precision!r}",
        )
        _require(
            self.num_threads is None or self.num_threads >= 1,
            "trainer.num_threads",
            f"must be >= 1 or null, got {self.num_threads}",
        )
        _require(
            self.max_batches is None or self.max_batches >= 1,
            "trainer.max_batches",
            f"must be >= 1 or null, got {self.max_batches}",
        )


# -------------------------------------------------------------------------------------- tracking
@dataclass
class TrackingConfig:
    """MLflow store. ``uri``: a SQLite store (``sqlite:///PATH/mlruns.db``, a relative PATH
    resolves against ``work_dir``) or a tracking server (``http://HOST:PORT``); null means
    ``$MLFLOW_TRACKING_URI`` or ``sqlite:///<work_dir>/mlruns.db``. A plain folder (MLflow's file
    store, which MLflow 3 refuses) is refused before any work starts."""

    uri: str | None = None
    experiment: str = "robustctl"
    artifact_location: str | None = None
    run_name: str | None = None
    log_checkpoints: bool = True
    # the trained network as an MLflow model (runs:/<run id>/model), and a version of the
    # registered model robustctl-<dataset>-<model>-<loss> (every `robustctl experiment` registers)
    log_model: bool = True
    register_model: bool = False
    parent_run_id: str | None = None  # nest this run under a parent (sweeps and experiments set it)
    experiment_tag: str | None = None  # the `experiment` tag (set by `robustctl experiment NAME`)
    resume_run_id: str | None = None  # reopen this run (experiment --resume: an unfinished child)
    # seconds before each retry of a write the server did not take; then the run logs offline to
    # <work_dir>/tracking-fallback/<run id> (robustctl sync replays it)
    retry_delays: list[float] = field(default_factory=lambda: [1.0, 4.0, 16.0])


# -------------------------------------------------------------------------------------- evaluate
@dataclass
class EvaluateConfig:
    """Which model ``robustctl evaluate`` loads: a checkpoint path, an MLflow model URI
    (``models:/NAME/VERSION``, ``runs:/ID/model``), a run id, or the latest training run."""

    checkpoint: str | None = None
    model_uri: str | None = None
    run_id: str | None = None
    batch_size: int = 512

    def __post_init__(self) -> None:
        _require(
            self.batch_size >= 1, "evaluate.batch_size", f"must be >= 1, got {self.batch_size}"
        )
        chosen = [k for k in ("checkpoint", "model_uri", "run_id") if getattr(self, k)]
        _require(
            len(chosen) <= 1,
            f"evaluate.{chosen[-1] if chosen else 'checkpoint'}",
            f"choose one model source, got {', '.join('evaluate.' + k for k in chosen)}",
        )


# ------------------------------------------------------------------------------------------ root
@dataclass
class RunConfig:
    """The whole composed configuration, typed."""

    dataset: Any  # each group's config is its option's dataclass, defined in its package:
    model: Any  # robustctl.data, .models, .losses, .attacks, .defenses, .threat_models,
    loss: Any  # .transforms, .train_defenses (each package's OPTIONS)
    trainer: TrainerConfig
    tracking: TrackingConfig
    evaluate: EvaluateConfig
    attack: Any
    defense: Any
    threat_model: Any
    transform: Any = (
        None  # robustctl.transforms: None or its config (``name`` "none": no transform)
    )
    train_defense: Any = None  # robustctl.train_defenses: None or its config
    work_dir: str = "."
    debug: bool = False
