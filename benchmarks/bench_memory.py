"""Peak memory at CIFAR-10 size: JSMA against ART's, KDE scoring against scikit-learn's.

Each case runs in a fresh process: it builds its inputs, records the process's peak resident
memory (``ru_maxrss``), runs the operation once, and reports how far the peak rose: the extra
memory the operation needed at its worst moment. References, same inputs, same run:

- JSMA: ``art.attacks.evasion.SaliencyMapMethod`` (theta 1, same gamma, same random targets) vs
  :class:`robustctl.attacks.JSMA` on ``--images`` CIFAR-shaped images (3x32x32, 3072 features)
  through a ResNet-20. A small ``--gamma`` bounds the iterations; the peak is reached in the first
  one (the saliency map over all feature pairs), so the number holds for the paper's gamma.
- KDE: ``sklearn.neighbors.KernelDensity`` fitted per class vs
  :meth:`robustctl.defenses.KDEDetector.score`, 10 classes x 1000 kernel points (the paper's
  per-class count), 64-d embeddings, 10,000 queries (the CIFAR-10 test set).

The ratio is ours / reference (below 1: ours needs less); ``n/a`` where the reference's peak
stayed below the set-up's (no measurable extra memory). CPU only: ``ru_maxrss`` measures host
memory (on a GPU, ``torch.cuda.max_memory_allocated`` is the figure to read).

    .venv/bin/python benchmarks/bench_memory.py --quick     # ~1 min on 2 CPU cores
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys

import torch
from common import write_record

CASES = ("jsma-ours", "jsma-art", "kde-ours", "kde-sklearn")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 images, 2,000 queries")
    p.add_argument("--images", type=int, default=16, help="JSMA batch")
    p.add_argument("--gamma", type=float, default=0.002, help="JSMA's feature budget")
    p.add_argument("--queries", type=int, default=10_000, help="KDE queries")
    p.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # child process
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    args = p.parse_args()
    if args.quick:
        args.images, args.queries = 4, 2000
    return args


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def jsma_case(args: argparse.Namespace, ours: bool) -> None:
    from robustctl.attacks import JSMA
    from robustctl.models import PredictionView, ResNet

    torch.manual_seed(0)
    model = PredictionView(ResNet(depth=20, num_classes=10, in_channels=3)).eval()
    x = torch.rand(args.images, 3, 32, 32)
    y = torch.randint(0, 10, (args.images,))
    target = (y + torch.randint(1, 10, y.shape)) % 10
    if ours:
        attack = JSMA(model, gamma=args.gamma, theta=1.0, targeted="random")
        run = lambda: attack(x, y, target=target)  # noqa: E731
    else:
        from art.attacks.evasion import SaliencyMapMethod
        from art.estimators.classification import PyTorchClassifier

        classifier = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            input_shape=(3, 32, 32),
            nb_classes=10,
            clip_values=(0.0, 1.0),
        )
        sm = SaliencyMapMethod(classifier, theta=1.0, gamma=args.gamma, batch_size=len(x))
        one_hot = torch.nn.functional.one_hot(target, 10).numpy()
        run = lambda: sm.generate(x.numpy(), y=one_hot)  # noqa: E731
    report(run)


def kde_case(args: argparse.Namespace, ours: bool) -> None:
    import numpy as np

    g = torch.Generator().manual_seed(0)
    means = 3.0 * torch.randn(10, 64, generator=g)
    labels = torch.arange(10).repeat_interleave(1000)
    points = means[labels] + torch.randn(10_000, 64, generator=g)
    q_labels = torch.randint(0, 10, (args.queries,), generator=g)
    queries = means[q_labels] + torch.randn(args.queries, 64, generator=g)
    sigma = 1.0
    if ours:
        from robustctl.defenses import KDEDetector

        detector = KDEDetector(per_class=1000, bandwidth=sigma).fit(points, labels)
        run = lambda: detector.score(queries, q_labels)  # noqa: E731
    else:
        from sklearn.neighbors import KernelDensity

        kdes = [
            KernelDensity(bandwidth=sigma / 2**0.5).fit(points[labels == c].numpy())
            for c in range(10)
        ]
        q = queries.numpy()
        c = q_labels.numpy()

        def run() -> np.ndarray:
            out = np.empty(len(q))
            for k, kde in enumerate(kdes):
                out[c == k] = kde.score_samples(q[c == k])
            return out

    report(run)


def report(run) -> None:  # type: ignore[no-untyped-def]
    before = peak_mib()
    run()
    print(json.dumps({"baseline_mib": before, "extra_mib": max(peak_mib() - before, 0.0)}))


def child(args: argparse.Namespace, case: str) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--case", case, "--images", str(args.images)]
    cmd += ["--gamma", str(args.gamma), "--queries", str(args.queries)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    args = parse_args()
    if args.case:
        kind, impl = args.case.split("-")
        (jsma_case if kind == "jsma" else kde_case)(args, ours=impl == "ours")
        return
    results = {case: child(args, case) for case in CASES}
    print(
        f"peak memory above the inputs, CPU | JSMA: ResNet-20, {args.images} x 3x32x32, gamma "
        f"{args.gamma} | KDE: 10 x 1000 points, 64-d, {args.queries} queries"
    )
    print(
        f"{'operation':<10}{'ours MiB':>10}{'reference MiB':>15}{'ours/reference':>16}  reference"
    )
    rows = {}
    for name, reference in (("jsma", "art"), ("kde", "sklearn")):
        ours, theirs = (
            results[f"{name}-ours"]["extra_mib"],
            results[f"{name}-{reference}"]["extra_mib"],
        )
        # a reference that never rose above the process's set-up peak has no measurable extra
        ratio = ours / theirs if theirs > 0 else None
        rows[name] = {"ours_mib": ours, "reference_mib": theirs, "ratio": ratio}
        shown = "n/a" if ratio is None else f"{ratio:.2f}x"
        print(f"{name:<10}{ours:>10.1f}{theirs:>15.1f}{shown:>16}  {reference}")
    write_record("bench_memory", {**vars(args), "device": "cpu"}, rows, args.json)


if __name__ == "__main__":
    main()
