"""Fault injection for reliability tests: kill the process for real at a chosen training step.

Set ``ROBUSTCTL_FAULT_KILL_AT_STEP=N`` and the trainer sends itself SIGKILL just before global
step N (0-based), i.e. mid-epoch, with no chance to clean up: exactly what a pre-empted job or
an OOM kill does. Unset (the normal case) this costs one dict lookup per run.
"""

from __future__ import annotations

import os
import signal

ENV = "ROBUSTCTL_FAULT_KILL_AT_STEP"


def kill_step() -> int | None:
    value = os.environ.get(ENV)
    return int(value) if value else None


def maybe_kill(step: int, at: int | None) -> None:
    if at is not None and step == at:
        os.kill(os.getpid(), signal.SIGKILL)
