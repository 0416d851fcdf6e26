"""Training-step cost of PDM (RCE + Siamese + RVL, with partner sampling) against CE.

Reference: the CE step of the same model on the same batch, measured in the same run, so the
printed ratio is independent of the machine. A PDM step forwards and back-propagates each sample
*and* its Siamese partner (one concatenated pass of 2B images), draws partners with
:class:`robustctl.losses.PairSampler` and gathers their images from the training tensor; the
target is a PDM/CE ratio of about 2 (twice the images), i.e. the loss terms and the sampling
cost little next to the network.

Each measurement is the median over ``--steps`` timed steps (after ``--warmup``), and CE and PDM
alternate in ``--rounds`` rounds so that load from other processes hits both alike.

    .venv/bin/python benchmarks/bench_losses.py --quick              # < 60 s on 2 CPU cores
    .venv/bin/python benchmarks/bench_losses.py --device cuda --batch-size 128 --image-size 32

Measured with ``--quick`` (torch 2.14.1, x86_64 CPU, 1 thread, machine shared with other jobs;
ResNet-20, batch 32, 1x16x16 images, 10 classes): CE 80 ms, PDM 151 ms, CE on 64 images 149 ms
per step; PDM/CE = 1.89, PDM / CE-64 = 1.01; partner sampling + loss terms 2.4 ms per step.
With 2 threads on the loaded machine the timings scatter (ratios 1.3-2.3), hence 1 thread.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from common import write_record

from robustctl.data.base import iterate_batches
from robustctl.losses import Pairs, PairSampler, build_loss, split_output
from robustctl.losses.schema import LossConfig, PDMLossConfig
from robustctl.models import ModelOutput, ResNet


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="small settings (ResNet-20, batch 32, 1x16x16, 1 thread) that finish in < 60 s",
    )
    p.add_argument("--device", default="cpu", help="cpu | cuda")
    p.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--channels", type=int, default=3)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument(
        "--train-size", type=int, default=5000, help="synthetic training set the partners come from"
    )
    p.add_argument("--steps", type=int, default=20, help="timed steps per round and loss")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    args = p.parse_args()
    if args.quick:
        args.depth, args.batch_size, args.image_size, args.channels = 20, 32, 16, 1
        args.steps, args.warmup, args.rounds, args.train_size = 8, 1, 3, 2000
        args.threads = args.threads or 1  # one thread: stable timings on a shared machine
    return args


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def loss_overhead(
    loss_fn,
    sampler: PairSampler,
    args: argparse.Namespace,
    device: torch.device,
    generator: torch.Generator,
    repeats: int = 20,
) -> float:
    """Seconds per step spent outside the network: partner draw plus the PDM loss and its
    backward."""
    b, d = args.batch_size, 64
    idx = torch.randint(0, len(sampler.labels), (b,), generator=generator)
    times = []
    for _ in range(repeats):
        logits = torch.randn(2 * b, args.classes, device=device, requires_grad=True)
        emb = torch.randn(2 * b, d, device=device, requires_grad=True)
        sync(device)
        t0 = time.perf_counter()
        partner, same = sampler.sample(idx, generator)
        labels = sampler.labels[idx].to(device)
        out, out_p = split_output(ModelOutput(logits, emb), b)
        loss = loss_fn(
            out, labels, pairs=Pairs(out_p, sampler.labels[partner].to(device), same.to(device))
        )
        loss.total.backward()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def time_steps(
    model: ResNet,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    sampler: PairSampler | None,
    args: argparse.Namespace,
    device: torch.device,
    generator: torch.Generator,
    batch_size: int,
) -> list[float]:
    """Seconds per training step (forward, loss, backward, SGD step), one per timed step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    batches = iterate_batches(x, y, batch_size, generator=generator)
    times = []
    for i in range(args.warmup + args.steps):
        try:
            xb, yb, idx = next(batches)
        except StopIteration:
            batches = iterate_batches(x, y, batch_size, generator=generator)
            xb, yb, idx = next(batches)
        sync(device)
        t0 = time.perf_counter()
        xb, yb = xb.to(device), yb.to(device)
        if sampler is None:
            loss = loss_fn(model(xb), yb)
        else:
            partner, same = sampler.sample(idx, generator)
            out, out_p = split_output(model(torch.cat([xb, x[partner].to(device)])), len(yb))
            loss = loss_fn(out, yb, pairs=Pairs(out_p, y[partner].to(device), same.to(device)))
        opt.zero_grad(set_to_none=True)
        loss.total.backward()
        opt.step()
        sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    args = parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.train_size, args.channels, args.image_size, args.image_size, generator=g)
    y = torch.randint(0, args.classes, (args.train_size,), generator=g)
    ce_loss = build_loss(LossConfig(name="ce"))
    pdm_loss = build_loss(PDMLossConfig(name="pdm", classification="rce"))
    sampler = PairSampler(y, q=0.5)
    # name -> (loss, sampler, batch size); "ce_2b" is CE on as many images as a PDM step forwards
    losses = {
        "ce": (ce_loss, None, args.batch_size),
        "pdm": (pdm_loss, sampler, args.batch_size),
        "ce_2b": (ce_loss, None, 2 * args.batch_size),
    }
    print(
        f"torch {torch.__version__} on {device} ({platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} threads); ResNet-{args.depth}, batch {args.batch_size}, "
        f"{args.channels}x{args.image_size}x{args.image_size} images, {args.classes} classes"
    )
    results: dict[str, list[float]] = {name: [] for name in losses}
    started = time.perf_counter()
    for _ in range(args.rounds):
        for name, (loss_fn, pair_sampler, batch_size) in losses.items():
            torch.manual_seed(0)
            model = ResNet(
                depth=args.depth, num_classes=args.classes, in_channels=args.channels
            ).to(device)
            results[name] += time_steps(
                model, loss_fn.to(device), x, y, pair_sampler, args, device, g, batch_size
            )
    ce, pdm, ce_2b = (statistics.median(results[k]) for k in ("ce", "pdm", "ce_2b"))
    overhead = loss_overhead(pdm_loss, sampler, args, device, g)
    print(
        f"CE  step, batch {args.batch_size:4d}:      {1000 * ce:9.2f} ms "
        f"(median of {len(results['ce'])})"
    )
    print(f"PDM step, batch {args.batch_size:4d} + partners: {1000 * pdm:9.2f} ms")
    print(
        f"CE  step, batch {2 * args.batch_size:4d}:      {1000 * ce_2b:9.2f} ms "
        "(as many images as PDM)"
    )
    print(f"PDM sampling + loss terms alone: {1000 * overhead:.2f} ms per step")
    print(
        f"PDM / CE-{2 * args.batch_size} step-time ratio: {pdm / ce_2b:.2f}  "
        "(cost of the PDM machinery)"
    )
    print(
        f"PDM/CE step-time ratio: {pdm / ce:.2f}  (target <= ~2.0: PDM forwards twice the images; "
        f"wall {time.perf_counter() - started:.1f} s)"
    )
    results = {
        "ce_step_s": ce,
        "pdm_step_s": pdm,
        "ce_double_batch_step_s": ce_2b,
        "pdm_machinery_s": overhead,
        "pdm_over_ce": pdm / ce,
        "pdm_over_ce_double_batch": pdm / ce_2b,
    }
    write_record("bench_losses", {**vars(args), "device": str(device)}, results, args.json)


if __name__ == "__main__":
    main()
