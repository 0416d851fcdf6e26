"""White-box convergence: attack passes per converged example, before and after the ladder's
savings (docs/method.md section 8.2.1).

Setup: a ResNet-8 (width 8) trained with Adam on the 8x8 ``digits`` (``--epochs``), the KDE
detector (default config), ``--images`` test images, per-example thresholds. Each variant runs the
convergence ladder (``robustctl.threat_models.convergence.converge``, at most ``--doublings``
doublings, the 2% / one-standard-error rule) from the same base budget:

- ``C&W-wb before``: Carlini's batch abort, every rung a fresh run from the clean images (the
  white-box stage before convergence was measured: each doubling a new, longer run);
- ``C&W-wb after``: the per-example abort (an example leaves the batch when its own loss stalls)
  and every rung restarted from each example's incumbent;
- ``FMN-wb``: the minimum-norm attack, restarted from incumbents.

Printed per variant: each rung (budget factor, success, median breach distortion, cumulative
passes), whether and where it converged, and the attack passes per attacked example spent up to
that point; headline: C&W-wb's passes per converged example, before / after (when "before" does not
converge within the cap, its passes at the cap, so the ratio is a lower bound, and it says so).

    PYTHONPATH=. .venv/bin/python benchmarks/bench_convergence.py            # ~3 min, 2 CPUs
    PYTHONPATH=. .venv/bin/python benchmarks/bench_convergence.py --quick    # ~30 s
"""

from __future__ import annotations

import argparse
import time

import torch
from common import train_digits_resnet8, write_record

from robustctl import metric_keys as keys
from robustctl.data import DatasetConfig, load_dataset
from robustctl.defenses import OPTIONS, fit_detector
from robustctl.evaluation.attack_runner import run_attack
from robustctl.inference import predict_labels
from robustctl.threat_models.convergence import ConvergenceConfig, converge
from robustctl.threat_models.cw_wb import CWWhiteBox
from robustctl.threat_models.fmn_wb import FMNWhiteBox


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="30 images, 2 doublings, short runs")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--doublings", type=int, default=4)
    p.add_argument("--cw-steps", type=int, default=100, help="C&W-wb base: 1 binary step")
    p.add_argument("--fmn-steps", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    if args.quick:
        args.images, args.doublings, args.cw_steps, args.fmn_steps = 30, 2, 40, 20
    return args


def ladder(name, make, x, y, clean_pred, doublings: int, warm: bool):
    def run_level(budget, incumbents):
        attack = make(budget)
        outcome = run_attack(
            attack,
            x,
            y,
            len(x),
            None,
            clean_pred,
            stage=keys.WHITEBOX,
            starts=incumbents if warm else None,
        )
        return outcome, attack.passes

    started = time.perf_counter()
    result = converge(run_level, x, ConvergenceConfig(max_doublings=doublings), keys.WHITEBOX)
    seconds = time.perf_counter() - started
    print(f"{name}:")
    for level in result.levels:
        print(
            f"  x{level.budget:<3d} success {level.success:.3f} ± {level.standard_error:.3f}  "
            f"median {level.median:.4f}  passes/example {level.passes / len(x):8.1f}"
        )
    per_example = result.passes / len(x)
    state = "converged" if result.converged else "NOT converged (cap)"
    print(f"  {state} at x{result.budget}: {per_example:.1f} passes per example, {seconds:.1f} s")
    return {
        "converged": result.converged,
        "budget": result.budget,
        "passes_per_example": per_example,
        "seconds": seconds,
        "levels": [level.as_json() for level in result.levels],
    }


def main() -> None:
    args = parse_args()
    torch.manual_seed(args.seed)
    data = load_dataset(DatasetConfig(), ".")
    model = train_digits_resnet8(data, args.epochs, args.seed)
    detector = fit_detector(OPTIONS.configs()["kde"], model, data)
    x, y = data.x_test[: args.images], data.y_test[: args.images]
    clean_pred = predict_labels(model, x, len(x))
    cw = dict(binary_steps=1, lr=0.1)

    def cw_before(budget):
        steps = args.cw_steps * budget
        return CWWhiteBox(model, detector, per_example_abort=False, steps=steps, **cw)

    def cw_after(budget):
        return CWWhiteBox(model, detector, steps=args.cw_steps * budget, **cw)

    def fmn(budget):
        return FMNWhiteBox(model, detector, steps=args.fmn_steps * budget)

    results = {
        "cw_wb_before": ladder("C&W-wb before", cw_before, x, y, clean_pred, args.doublings, False),
        "cw_wb_after": ladder("C&W-wb after", cw_after, x, y, clean_pred, args.doublings, True),
        "fmn_wb": ladder("FMN-wb", fmn, x, y, clean_pred, args.doublings, True),
    }
    before, after = results["cw_wb_before"], results["cw_wb_after"]
    ratio = before["passes_per_example"] / after["passes_per_example"]
    bound = "" if before["converged"] else " (lower bound: before did not converge)"
    note = "" if after["converged"] else " (after did not converge either)"
    print(
        f"C&W-wb passes per converged example, before / after: {ratio:.2f}x{bound}{note} "
        f"({before['passes_per_example']:.1f} vs {after['passes_per_example']:.1f})"
    )
    results["ratio_before_after"] = ratio
    write_record("bench_convergence", vars(args), results, args.json)


if __name__ == "__main__":
    main()
