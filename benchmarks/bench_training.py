"""Training throughput: robustctl's training loop against a plain DataLoader loop.

Reference (measured in the same run, same model weights, batch size, optimizer and device): the
usual torchvision recipe. A ``torch.utils.data.DataLoader`` (``shuffle=True``,
``--workers`` worker processes, pinned memory on CUDA) over a dataset of the same CPU tensors
that augments each image with ``torchvision.transforms.RandomCrop(size, padding=4)`` and
``RandomHorizontalFlip``; each batch is copied to the device, the model runs in fp32, CE loss,
SGD with momentum, and ``loss.item()`` is read every step for the progress display.

Ours: :func:`robustctl.training.trainer.train_epoch` with CE, the training split moved to the
device once (:class:`~robustctl.training.trainer.TrainingSet`), crop/flip and shuffling on the
device, and the trainer's step settings for that device (``--precision``/``--channels-last``;
defaults: bf16 + channels_last on CUDA, fp32 on the CPU). Its per-epoch bookkeeping (statistics,
learning-rate schedule, divergence check) is included in its time.

Each figure is images per second over ``--steps`` steps (after one warm-up call of each), ours and
the reference alternating in ``--rounds`` rounds, median over rounds. The printed ratio is
ours / reference; targets: >= 0.95 on the CPU, >= 2 for ResNet-56 on a GPU (CIFAR-10-shaped data).

    .venv/bin/python benchmarks/bench_training.py --quick         # ~2 min on 2 CPU cores
    .venv/bin/python benchmarks/bench_training.py --device cuda   # 3x32x32, 50k images
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from common import sync, write_record
from torch import Tensor, nn
from torchvision import transforms

from robustctl.config.schema import TrainerConfig
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import build_loss
from robustctl.models import ResNet
from robustctl.training.speed import StepSettings
from robustctl.training.trainer import TrainingSet, train_epoch


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1024 images, 3 steps, 2 rounds")
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--depths", type=int, nargs="+", default=[20, 56], help="ResNet depths 6n+2")
    p.add_argument("--train-size", type=int, default=50_000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--steps", type=int, default=50, help="timed steps per measurement")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    p.add_argument("--precision", default="auto", help="ours: auto | fp32 | bf16")
    p.add_argument("--channels-last", default=None, choices=["true", "false"], help="ours")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    args = p.parse_args()
    if args.quick:
        args.train_size, args.steps, args.rounds = 1024, 3, 2
    if args.workers is None:
        args.workers = 4 if args.device.startswith("cuda") else 0
    return args


class AugmentedImages(torch.utils.data.Dataset):
    """The reference's dataset: per-image torchvision crop + flip of CPU tensors."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y
        size = x.shape[-1]
        self.augment = transforms.Compose(
            [transforms.RandomCrop(size, padding=4), transforms.RandomHorizontalFlip()]
        )

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.augment(self.x[i]), self.y[i]


def reference_loop(model: nn.Module, loader, optimizer, device: torch.device, steps: int) -> float:
    """Seconds for ``steps`` steps of the plain loop."""
    model.train()
    batches = iter(loader)
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        try:
            xb, yb = next(batches)
        except StopIteration:
            batches = iter(loader)
            xb, yb = next(batches)
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        loss = F.cross_entropy(model(xb).logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()  # the usual per-step progress display
    sync(device)
    return time.perf_counter() - t0


def our_loop(model, loss_fn, optimizer, train, generator, cfg, settings, forward, device) -> float:
    """Seconds for ``cfg.trainer.max_batches`` steps of robustctl's epoch."""
    sync(device)
    t0 = time.perf_counter()
    train_epoch(
        model,
        loss_fn,
        optimizer,
        train,
        generator,
        cfg=cfg,
        epoch=0,
        step0=0,
        total_steps=cfg.trainer.max_batches,
        device=device,
        settings=settings,
        forward=forward,
    )
    sync(device)
    return time.perf_counter() - t0


def measure(depth: int, args: argparse.Namespace, x: Tensor, y: Tensor) -> dict[str, float]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    base = ResNet(depth=depth, num_classes=10, in_channels=args.channels)

    # reference
    ref_model = copy.deepcopy(base).to(device)
    ref_opt = torch.optim.SGD(ref_model.parameters(), lr=0.01, momentum=0.9)
    loader = torch.utils.data.DataLoader(
        AugmentedImages(x, y),
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        num_workers=args.workers,
        pin_memory=device.type == "cuda",
        persistent_workers=args.workers > 0,
    )

    # ours
    trainer = TrainerConfig(
        epochs=1,
        batch_size=args.batch_size,
        lr=0.01,
        schedule="constant",
        max_batches=args.steps,
        precision=args.precision,
        channels_last=None if args.channels_last is None else args.channels_last == "true",
    )
    cfg = SimpleNamespace(trainer=trainer)
    settings = StepSettings.resolve(trainer, device)
    model = copy.deepcopy(base).to(device)
    forward = settings.prepare(model)
    loss_fn = build_loss(LOSS_OPTIONS.configs()["ce"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    train = TrainingSet(x.to(device), y.to(device), augment=True)
    generator = torch.Generator(device=device).manual_seed(0)

    def ours() -> float:
        return our_loop(model, loss_fn, opt, train, generator, cfg, settings, forward, device)

    def reference() -> float:
        return reference_loop(ref_model, loader, ref_opt, device, args.steps)

    ours(), reference()  # warm-up (allocator, cuDNN autotuning, workers, compilation)
    t_ours, t_ref = [], []
    for _ in range(args.rounds):
        t_ours.append(ours())
        t_ref.append(reference())
    images = args.steps * args.batch_size
    ours_ips = images / statistics.median(t_ours)
    ref_ips = images / statistics.median(t_ref)
    return {
        "depth": depth,
        "ours_images_per_s": ours_ips,
        "reference_images_per_s": ref_ips,
        "ratio": ours_ips / ref_ips,
        "ours_settings": settings.tags(),
    }


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    shape = (args.train_size, args.channels, args.image_size, args.image_size)
    x = torch.rand(shape, generator=g)
    y = torch.randint(0, 10, (args.train_size,), generator=g)
    print(
        f"training loop: robustctl vs DataLoader reference | {args.device} | "
        f"{'x'.join(map(str, shape[1:]))}, {args.train_size} images, batch {args.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds, reference workers {args.workers}"
    )
    rows = []
    for depth in args.depths:
        rows.append(measure(depth, args, x, y))
        print(f"  ResNet-{depth}: done", flush=True)
    print(f"\n{'model':<11}{'ours img/s':>12}{'reference img/s':>17}{'ours/reference':>16}  ours")
    for r in rows:
        s = r["ours_settings"]
        print(
            f"{'ResNet-' + str(r['depth']):<11}{r['ours_images_per_s']:>12.1f}"
            f"{r['reference_images_per_s']:>17.1f}{r['ratio']:>15.2f}x  "
            f"{s['train_precision']}, channels_last {s['train_channels_last']}"
        )
    write_record("bench_training", {**vars(args), "device": args.device}, rows, args.json)


if __name__ == "__main__":
    main()
