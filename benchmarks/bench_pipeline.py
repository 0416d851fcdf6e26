"""Where a run's time goes: the ``make run`` pipeline broken down by stage.

Runs the same steps as ``robustctl run`` (without MLflow) on the default config, or on the
config that ``--overrides`` give, and times each stage: loading the data, training, the model's
embeddings of every split (one pass each), the detector fit, the clean stage's diagnostics
(gradient norms, Jacobian, t-SNE), and each threat-model stage (gray-box, white-box, black-box).
Reference: the whole pipeline's time in the same run; each stage is reported as seconds and as
its share of the total, so the slowest stage is visible on any machine.

    .venv/bin/python benchmarks/bench_pipeline.py --quick      # synthetic data, ~1 min
    .venv/bin/python benchmarks/bench_pipeline.py              # the make-run job (digits)
    .venv/bin/python benchmarks/bench_pipeline.py --device cuda --overrides \\
        dataset=synthetic dataset.channels=3 dataset.image_size=32 model=resnet56
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any

from common import write_record

from robustctl import metric_keys as keys
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.defenses import fit_detector
from robustctl.evaluation.clean_stage import clean_stage
from robustctl.inference import ModelOutputs
from robustctl.threat_models import run_threat_model
from robustctl.training import fit

QUICK = [
    "dataset=synthetic",
    "dataset.num_samples=600",
    "trainer.epochs=3",
    "threat_model=quick",
]


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="synthetic data, small budgets (~1 min)")
    p.add_argument("--device", default="cpu", help="trainer.device: cpu | cuda | auto")
    p.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides, as for `run`")
    p.add_argument("--json", default=None, help="record path (default reports/bench/...)")
    return p.parse_args()


def timed(stages: dict[str, float], name: str, fn: Callable[[], Any]) -> Any:
    t0 = time.perf_counter()
    out = fn()
    stages[name] = time.perf_counter() - t0
    return out


def main() -> None:
    args = parse_args()
    overrides = [*(QUICK if args.quick else []), *args.overrides]
    with tempfile.TemporaryDirectory() as work:
        _, cfg = compose([*overrides, f"trainer.device={args.device}", f"work_dir={work}"])
        batch = cfg.evaluate.batch_size
        stages: dict[str, float] = {}
        started = time.perf_counter()
        data = timed(stages, "data", lambda: load_dataset(cfg.dataset, cfg.work_dir))
        model = timed(stages, "train", lambda: fit(cfg, data, chash="bench").model)
        outputs = ModelOutputs(model, data, batch)
        timed(stages, "embeddings", lambda: [outputs.split(s) for s in outputs.SPLITS])
        detector = timed(
            stages, "detector", lambda: fit_detector(cfg.defense, model, data, batch, outputs)
        )
        clean = timed(
            stages,
            "clean diagnostics",
            lambda: clean_stage(cfg, model, data, cfg.loss.classification, outputs),
        )
        threat = run_threat_model(cfg, model, data, detector, outputs)
        for result in threat:
            for stage in cfg.threat_model.stages:
                seconds = result.metrics.get(keys.stage_time(stage))
                if seconds is not None:
                    stages[stage] = seconds
        total = time.perf_counter() - started
    accuracy = clean.metrics[keys.CLEAN_ACCURACY]
    print(
        f"\npipeline: {cfg.dataset.name}, {cfg.model.name}, loss {cfg.loss.name}, "
        f"{cfg.trainer.epochs} epochs, threat_model {cfg.threat_model.name} | "
        f"{args.device} | clean accuracy {accuracy:.4f}"
    )
    print(f"{'stage':<19}{'seconds':>9}{'share':>8}")
    for name, seconds in stages.items():
        mark = "  <- slowest" if seconds == max(stages.values()) else ""
        print(f"{name:<19}{seconds:>9.1f}{seconds / total:>8.1%}{mark}")
    print(f"{'total':<19}{total:>9.1f}{1:>8.0%}")
    results = {"stages_s": stages, "total_s": total, "clean_accuracy": accuracy}
    write_record("bench_pipeline", {**vars(args), "overrides": overrides}, results, args.json)


if __name__ == "__main__":
    main()
