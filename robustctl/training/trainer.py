"""The training loop, top to bottom: build, (resume), then per epoch train -> validate ->
checkpoint.

Reproducibility: one seed sets the model initialisation and a dedicated generator for shuffling
and augmentation (and Siamese partners); the learning rate is a pure function of the step; the
checkpoint holds the weights, optimizer state, the loss's state (e.g. class centers), both RNG
states and the metric history. Resuming from the checkpoint of epoch e therefore continues
exactly as an uninterrupted run would (bit-identical on CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robustctl import metric_keys as keys
from robustctl.config.schema import RunConfig
from robustctl.console import console, progress
from robustctl.data.base import ImageData, crop_flip, iterate_batches
from robustctl.errors import CheckpointError, TrainingDiverged, TrainingOutOfMemory
from robustctl.inference import accuracy
from robustctl.losses import Pairs, PairSampler, TrainingLoss, build_loss, split_output
from robustctl.models import ModelOutput, ResNet, build_model
from robustctl.train_defenses import build_train_defense
from robustctl.training.checkpoint import save_checkpoint
from robustctl.training.device import resolve_device, seed_everything
from robustctl.training.faults import kill_step, maybe_kill
from robustctl.training.schedule import learning_rate
from robustctl.training.speed import StepSettings
from robustctl.transforms import build_transform, transform_meta


@dataclass
class TrainResult:
    model: ResNet
    history: list[dict[str, float]]
    checkpoint: Path
    meta: dict[str, Any]
    resumed_from_epoch: int = 0
    wall_time_s: float = 0.0
    final: dict[str, float] = field(default_factory=dict)


TRAINING_CONFIG_KEY = "training_config"  # meta: {group: its config as a dict}
TRAINING_GROUPS = ("model", "loss", "transform", "train_defense", "trainer")  # what trains a model


def checkpoint_path(cfg: RunConfig, chash: str) -> Path:
    """``<work_dir>/<trainer.checkpoint_dir>/<config hash>/last.pt``:
    one slot per training config."""
    return Path(cfg.work_dir, cfg.trainer.checkpoint_dir, chash, "last.pt")


def channel_stats(
    x: Tensor, transform: nn.Module | None = None, chunk_size: int = 4096
) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of the training images ``x`` as the network's first layer sees
    them, i.e. after the input ``transform`` (applied in chunks of ``chunk_size``, no grad): the
    model's normalization layer."""
    if transform is not None and not isinstance(transform, nn.Identity):
        with torch.no_grad():
            x = torch.cat([transform(chunk) for chunk in x.split(chunk_size)])
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return mean.tolist(), std.tolist()


def model_meta(
    cfg: RunConfig, data: ImageData, loss: TrainingLoss, chash: str, run_id: str | None
) -> dict[str, Any]:
    """Everything needed to rebuild the model from a checkpoint and to tell where it came from."""
    return {
        "model": asdict(cfg.model),  # checkpoints without a field get its default
        "transform": transform_meta(cfg.transform),  # None: no input transform
        "train_defense": getattr(cfg.train_defense, "name", "none"),
        "num_classes": data.num_classes,
        "in_channels": data.image_shape[0],
        "image_shape": list(data.image_shape),
        "class_names": list(data.class_names),
        "dataset": data.name,
        "dataset_hash": data.content_hash(),
        "loss": cfg.loss.name,
        "logit_sign": float(loss.logit_sign),
        "config_hash": chash,
        "run_id": run_id,
        # the settings it was trained with, which `robustctl evaluate` records and checks
        # overrides against (robustctl.evaluation.trained_config)
        TRAINING_CONFIG_KEY: {group: asdict(getattr(cfg, group)) for group in TRAINING_GROUPS},
    }


@dataclass(frozen=True)
class TrainingSet:
    """The training split where the step runs: images [N, C, H, W] and labels [N] on the training
    device (moved once per run), and whether batches are augmented (crop + flip, on the device)."""

    x: Tensor
    y: Tensor
    augment: bool

    @classmethod
    def on(cls, data: ImageData, device: torch.device) -> TrainingSet:
        return cls(data.x_train.to(device), data.y_train.to(device), data.augment)


def train_epoch(
    model: ResNet,
    loss_fn: TrainingLoss,
    optimizer: torch.optim.Optimizer,
    train: TrainingSet,
    generator: torch.Generator,
    *,
    cfg: RunConfig,
    epoch: int,
    step0: int,
    total_steps: int,
    device: torch.device,
    bar: Any = None,
    task: Any = None,
    pair_sampler: PairSampler | None = None,
    settings: StepSettings | None = None,
    forward: Any = None,
    batch_hook: Callable[[Tensor, Tensor], Tensor] | None = None,
) -> dict[str, float]:
    """One pass over the training set; returns mean loss (and terms), accuracy, lr, embedding norm.

    With a ``batch_hook`` (a training-time defense's, :mod:`robustctl.train_defenses`) each batch
    first goes through it (adversarial training: part of it replaced by adversarial examples;
    distillation: the teacher's soft labels set for it); augmentation comes before, Siamese
    partners stay clean.

    With a ``pair_sampler`` (losses with ``needs_pairs``, PDM Algorithm 1) each batch also draws a
    Siamese partner per sample from the training set, forwards samples and partners in one pass,
    and hands the partners' outputs to the loss; statistics count the batch's own samples only.

    Everything stays on ``device``: shuffling, augmentation and partners draw from ``generator``
    (on the device), statistics accumulate in device tensors and are read once at the end, and the
    divergence check and the progress bar's loss read the device every ``settings.sync_every``
    steps. ``forward`` is the module the step calls (the model, or its compiled wrapper).
    """
    tr = cfg.trainer
    settings = settings or StepSettings.resolve(tr, device)
    forward = model if forward is None else forward
    model.train()
    sums: dict[str, Tensor] = {}
    zero = torch.zeros((), device=device)
    correct, norm_sum, spread_sum = zero.clone(), zero.clone(), zero.clone()  # correct: a count
    first_bad = torch.full((), -1, dtype=torch.long, device=device)  # first non-finite batch
    seen = 0
    lr = tr.lr
    fault_at = kill_step()
    batches = iterate_batches(
        train.x,
        train.y,
        tr.batch_size,
        generator=generator,
        augment=train.augment,
        max_batches=tr.max_batches,
    )
    for b, (xb, yb, idx) in enumerate(batches):
        step = step0 + b
        maybe_kill(step, fault_at)
        lr = learning_rate(
            step,
            total_steps,
            base_lr=tr.lr,
            schedule=tr.schedule,
            warmup_fraction=tr.warmup_epochs / tr.epochs,
            milestones=tr.milestones,
            gamma=tr.gamma,
        )
        for group in optimizer.param_groups:
            group["lr"] = lr
        if batch_hook is not None:
            xb = batch_hook(xb, yb)
        pairs_x = None
        if pair_sampler is not None:
            partner, same = pair_sampler.sample(idx, generator)
            xp = crop_flip(train.x[partner], generator) if train.augment else train.x[partner]
            pairs_x = (xp, train.y[partner], same)
        out, loss = train_step(forward, loss_fn, settings, device, xb, yb, pairs_x)
        first_bad = torch.where(
            (first_bad < 0) & ~torch.isfinite(loss.total.detach()), b, first_bad
        )
        optimizer.zero_grad(set_to_none=True)
        loss.total.backward()
        optimizer.step()
        with torch.no_grad():
            n = len(yb)
            for name, value in {"loss": loss.total, **loss.terms}.items():
                sums[name] = sums.get(name, zero) + value.detach() * n
            correct += ((model.logit_sign * out.logits).argmax(1) == yb).sum()
            z = out.embedding.detach()
            norm_sum += z.norm(dim=1).sum()
            # relative spread: within-batch variance over mean squared norm (0 = every z identical)
            spread_sum += (
                n * (z - z.mean(0)).pow(2).sum(1).mean() / z.pow(2).sum(1).mean().clamp_min(1e-12)
            )
            seen += n
        if (b + 1) % settings.sync_every == 0:
            check_finite(first_bad, epoch, sums["loss"])
            if bar is not None:
                bar.update(task, status=f"loss {loss.total.item():.3f}")
        if bar is not None:
            bar.update(task, advance=1)
    check_finite(first_bad, epoch, sums.get("loss", zero))
    names = list(sums)
    means = torch.stack([*(sums[k] for k in names), norm_sum, spread_sum]) / max(seen, 1)
    values = torch.cat([means, correct.view(1)]).tolist()  # the epoch's one read of the device
    stats = {keys.train_term(k): v for k, v in zip(names, values, strict=False)}
    stats.update(
        {
            keys.TRAIN_ACCURACY: int(values[-1]) / max(seen, 1),
            keys.LEARNING_RATE: lr,
            keys.EMBED_MEAN_NORM: values[-3],
            keys.EMBED_SPREAD: values[-2],
        }
    )
    return stats


def train_step(
    forward: Any,
    loss_fn: TrainingLoss,
    settings: StepSettings,
    device: torch.device,
    xb: Tensor,
    yb: Tensor,
    pairs_x: tuple[Tensor, Tensor, Tensor] | None = None,
) -> tuple[ModelOutput, Any]:
    """Forward pass (under the step's autocast and memory format) and loss in fp32: returns the
    batch's own outputs and the loss value. ``pairs_x`` = (partner images, partner labels, same)
    forwards the partners in the same pass (PDM)."""
    x = xb if pairs_x is None else torch.cat([xb, pairs_x[0]])
    with settings.autocast(device):
        raw = forward(settings.images(x))
    out_all = ModelOutput(raw.logits.float(), raw.embedding.float())
    if pairs_x is None:
        return out_all, loss_fn(out_all, yb)
    out, out_p = split_output(out_all, len(yb))
    return out, loss_fn(out, yb, pairs=Pairs(out_p, pairs_x[1], pairs_x[2].to(out_p.logits)))


def check_finite(first_bad: Tensor, epoch: int, loss_sum: Tensor) -> None:
    """Raise :class:`TrainingDiverged` when a batch's loss was not finite (a device read)."""
    bad = int(first_bad)
    if bad >= 0:
        raise TrainingDiverged(
            f"loss became {float(loss_sum)} at epoch {epoch + 1}, batch {bad + 1}",
            hint="lower trainer.lr (or a loss weight); the last good checkpoint is kept",
        )


def log_unlogged_epochs(tracker: Any, history: list[dict[str, float]]) -> None:
    """Log the checkpoint's epochs the run has no metrics for: a process killed between an
    epoch's checkpoint and its metrics (pre-emption) resumes after that epoch, so its metrics
    come from the checkpoint's history, once."""
    logged = tracker.logged_steps(keys.TRAIN_LOSS)
    if logged is None:  # the store is unreachable: the journal cannot say what was logged
        return
    for epoch, stats in enumerate(history, start=1):
        if epoch not in logged:
            tracker.log_metrics(stats, step=epoch)


def fit(
    cfg: RunConfig,
    data: ImageData,
    *,
    chash: str,
    tracker: Any = None,
    resume_state: dict[str, Any] | None = None,
    provenance: dict[str, str] | None = None,
    teacher: nn.Module | None = None,
) -> TrainResult:
    """Train ``cfg.model`` with ``cfg.loss`` on ``data``; log per-epoch metrics and checkpoints.

    ``provenance`` (e.g. the run's training fingerprint and loss variant) is stored in the
    checkpoint's ``meta``, so an ``evaluate`` run of it can tag itself the same way. ``teacher``:
    the trained teacher of a distillation student (``train_defense=distillation``)."""
    tr = cfg.trainer
    started = time.perf_counter()
    if tr.num_threads:
        torch.set_num_threads(tr.num_threads)
    device = resolve_device(tr.device)
    seed_everything(tr.seed)
    loss_fn = build_loss(cfg.loss).to(device)
    if teacher is not None:
        teacher = teacher.to(device).eval()
    train_defense = build_train_defense(cfg.train_defense, teacher)
    if train_defense is not None:
        loss_fn = train_defense.wrap_loss(loss_fn)
    transform = build_transform(cfg.transform)
    mean, std = channel_stats(data.x_train, transform)
    model = build_model(
        cfg.model,
        num_classes=data.num_classes,
        in_channels=data.image_shape[0],
        mean=mean,
        std=std,
        logit_sign=loss_fn.logit_sign,
        transform=transform,
    ).to(device)
    settings = StepSettings.resolve(tr, device)
    forward = settings.prepare(model)
    train = TrainingSet.on(data, device)
    pair_sampler = (
        PairSampler(data.y_train, q=loss_fn.same_class_probability).to(device)
        if loss_fn.needs_pairs
        else None
    )
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=tr.lr,
        momentum=tr.momentum,
        nesterov=tr.nesterov,
        weight_decay=tr.weight_decay,
    )
    generator = torch.Generator(device=device).manual_seed(tr.seed)
    steps_per_epoch = math.ceil(len(data.y_train) / tr.batch_size)
    if tr.max_batches is not None:
        steps_per_epoch = min(steps_per_epoch, tr.max_batches)
    total_steps = steps_per_epoch * tr.epochs
    meta = model_meta(cfg, data, loss_fn, chash, tracker.run_id if tracker else None)
    meta.update(provenance or {})
    meta["step_settings"] = settings.tags()
    path = checkpoint_path(cfg, chash)

    start_epoch, history = 0, []
    if resume_state is not None:
        if resume_state["meta"].get("config_hash") != chash:
            raise CheckpointError(
                f"checkpoint {path} was written by a different config (hash "
                f"{resume_state['meta'].get('config_hash')} != {chash})"
            )
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        loss_fn.load_state_dict(resume_state.get("loss", {}))
        saved_on = resume_state["rng"].get("device", "cpu")
        if saved_on != device.type:
            raise CheckpointError(
                f"checkpoint {path} was trained on {saved_on}; its shuffle generator cannot "
                f"continue on {device.type}",
                hint=f"resume with trainer.device={saved_on}, or start afresh "
                "(trainer.resume=false)",
            )
        generator.set_state(resume_state["rng"]["shuffle"])
        torch.set_rng_state(resume_state["rng"]["torch"])
        start_epoch, history = int(resume_state["epoch"]), list(resume_state["history"])
        console.print(f"[green]resuming[/] from epoch {start_epoch}/{tr.epochs} ({path})")
        if tracker is not None:
            log_unlogged_epochs(tracker, history)

    with progress() as bar:
        epochs_task = bar.add_task("epochs", total=tr.epochs, completed=start_epoch, status="")
        for epoch in range(start_epoch, tr.epochs):
            t0 = time.perf_counter()
            batch_task = bar.add_task(f"epoch {epoch + 1}", total=steps_per_epoch, status="")
            try:
                stats = train_epoch(
                    model,
                    loss_fn,
                    optimizer,
                    train,
                    generator,
                    cfg=cfg,
                    epoch=epoch,
                    step0=epoch * steps_per_epoch,
                    total_steps=total_steps,
                    device=device,
                    bar=bar,
                    task=batch_task,
                    pair_sampler=pair_sampler,
                    settings=settings,
                    forward=forward,
                    batch_hook=(
                        None
                        if train_defense is None
                        else train_defense.for_epoch(model, seed=tr.seed, epoch=epoch)
                    ),
                )
            except torch.OutOfMemoryError as exc:
                raise TrainingOutOfMemory(
                    f"out of device memory in epoch {epoch + 1} at "
                    f"trainer.batch_size={tr.batch_size} ({device})",
                    hint="lower trainer.batch_size (runs with another batch size are another "
                    "experiment), or use trainer.precision=bf16; the last checkpoint is kept",
                ) from exc
            bar.remove_task(batch_task)
            stats[keys.VAL_ACCURACY] = accuracy(model, data.x_val, data.y_val, tr.eval_batch_size)
            stats[keys.EPOCH_TIME] = time.perf_counter() - t0
            history.append(stats)
            # checkpoint before logging: a process killed between the two (pre-emption) resumes
            # after this epoch, so no epoch's metrics are ever logged twice
            save_checkpoint(
                {
                    "meta": meta,
                    "epoch": epoch + 1,
                    "history": history,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "loss": loss_fn.state_dict(),
                    "rng": {
                        "shuffle": generator.get_state(),
                        "torch": torch.get_rng_state(),
                        "device": device.type,
                    },
                },
                path,
            )
            if tracker is not None:
                tracker.log_metrics(stats, step=epoch + 1)
            if tracker is not None and cfg.tracking.log_checkpoints:
                tracker.log_artifact(path, "checkpoints")
            bar.update(epochs_task, advance=1, status=f"val acc {stats[keys.VAL_ACCURACY]:.3f}")
            console.print(
                f"epoch {epoch + 1:>3}/{tr.epochs}  loss {stats[keys.TRAIN_LOSS]:.4f}  "
                f"train acc {stats[keys.TRAIN_ACCURACY]:.4f}  "
                f"val acc {stats[keys.VAL_ACCURACY]:.4f}  "
                f"lr {stats[keys.LEARNING_RATE]:.4g}  {stats[keys.EPOCH_TIME]:.1f}s"
            )
    last = history[-1] if history else {}
    if last.get(keys.EMBED_MEAN_NORM, 1.0) < 1e-3 or last.get(keys.EMBED_SPREAD, 1.0) < 1e-3:
        console.print(
            "[yellow]warning:[/] embeddings collapsed (mean norm or relative spread < 1e-3): every "
            "image maps to nearly the same point; "
            "lower the geometry-loss weights (e.g. loss.rvl_weight)"
        )
    model.eval()
    return TrainResult(
        model=model,
        history=history,
        checkpoint=path,
        meta=meta,
        resumed_from_epoch=start_epoch,
        wall_time_s=time.perf_counter() - started,
        final=history[-1] if history else {},
    )
