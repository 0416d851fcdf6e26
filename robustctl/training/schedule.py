"""Learning-rate schedules as pure functions of the step, so a resumed run gets the same rates.

With t = step / total_steps in [0, 1) and w = warm-up fraction:
- warm-up (t < w): lr * (t / w)
- ``cosine``: lr * 0.5 * (1 + cos(pi * (t - w) / (1 - w)))
- ``step``:   lr * gamma ** (number of milestones <= t)
- ``constant``: lr
"""

from __future__ import annotations

import math
from collections.abc import Sequence


def learning_rate(
    step: int,
    total_steps: int,
    *,
    base_lr: float,
    schedule: str,
    warmup_fraction: float = 0.0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> float:
    t = step / max(total_steps, 1)
    if warmup_fraction > 0 and t < warmup_fraction:
        return base_lr * (step + 1) / max(warmup_fraction * total_steps, 1)
    rules = {
        "constant": lambda: base_lr,
        "cosine": lambda: (
            base_lr * 0.5 * (1 + math.cos(math.pi * (t - warmup_fraction) / (1 - warmup_fraction)))
        ),
        "step": lambda: base_lr * gamma ** sum(t >= m for m in milestones),
    }
    return rules[schedule]()
