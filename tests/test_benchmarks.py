"""The benchmarks run (tiny sizes) and print their headline ratio: `make bench` must not rot.

Timings are not asserted (they belong to the benchmarks, not the tests); only that each script
finishes, reports the ratio it exists to report with a finite positive value, and writes its JSON
record (settings, machine, results).
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    "bench_losses.py": (
        [
            "--depth",
            "8",
            "--image-size",
            "8",
            "--channels",
            "1",
            "--batch-size",
            "8",
            "--train-size",
            "64",
            "--steps",
            "2",
            "--warmup",
            "1",
            "--rounds",
            "1",
            "--threads",
            "1",
        ],
        r"PDM/CE step-time ratio: ([0-9.]+)",
    ),
    "bench_kde.py": (
        ["--per-class", "40", "--queries", "200", "--dim", "8", "--rounds", "1", "--repeat", "1"],
        r"speed-up vs sklearn: float32 ([0-9.]+)x",
    ),
    "bench_training.py": (
        [
            "--depths",
            "8",
            "--train-size",
            "64",
            "--image-size",
            "8",
            "--channels",
            "1",
            "--batch-size",
            "16",
            "--steps",
            "2",
            "--rounds",
            "1",
            "--threads",
            "1",
        ],
        r"ResNet-8\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)x",
    ),
    "bench_memory.py": (
        ["--images", "2", "--gamma", "0.001", "--queries", "200"],
        r"\njsma\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)x",
    ),
    "bench_pipeline.py": (
        [
            "--overrides",
            "dataset=synthetic",
            "dataset.num_samples=200",
            "trainer.epochs=1",
            "threat_model=graybox",
            "threat_model.attacks=[fgsm-0.1]",
            "threat_model.num_samples=20",
            "threat_model.min_pairs=2",
        ],
        r"\ntotal\s+([0-9.]+)",
    ),
    "bench_progress.py": (
        ["--batch-size", "2", "--cw-steps", "4", "--binary-steps", "1", "--jsma-steps", "2"]
        + ["--rounds", "1"],
        r"iteration-bar slowdown \(inner / outer, median; best\): cw_hc ([0-9.]+)x",
    ),
    "bench_convergence.py": (
        ["--epochs", "2", "--images", "12", "--doublings", "1", "--cw-steps", "20"]
        + ["--fmn-steps", "10"],
        r"C&W-wb passes per converged example, before / after: ([0-9.]+)x",
    ),
    # jsma's reference is ART (torchattacks < 3.5 has no JSMA): its row must carry a ratio, not n/a;
    # the AutoAttack ensemble's row (ours vs torchattacks' MultiAttack) too
    "bench_attacks.py": (
        ["--quick", "--attacks", "fgsm", "jsma", "autoattack", "--repeats", "1", "--budget", "0"]
        + ["--aa-steps", "5", "--aa-queries", "20"],
        r"\nfgsm\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+.*\njsma\s+[0-9.]+\s+[0-9.]+\s+[0-9.]+.*"
        r"\nautoattack\s+[0-9.]+\s+[0-9.]+\s+([0-9.]+)",
    ),
}


# over ~10 s each on 2 CPU cores: the system tier (`make test-system`)
SLOW = {"bench_attacks.py", "bench_convergence.py", "bench_memory.py", "bench_pipeline.py"}


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, marks=pytest.mark.slow) if s in SLOW else s for s in sorted(CASES)],
)
def test_benchmark_runs_and_reports_its_ratio(script: str, tmp_path: Path) -> None:
    args, pattern = CASES[script]
    record = tmp_path / "record.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args, "--json", str(record)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    match = re.search(pattern, proc.stdout)
    assert match, proc.stdout[-2000:]
    ratio = float(match.group(1))
    assert math.isfinite(ratio) and ratio > 0
    written = json.loads(record.read_text())
    assert written["benchmark"] == script.removesuffix(".py")
    assert written["machine"]["torch"] and written["results"]
