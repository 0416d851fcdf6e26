"""Shared ways to train in tests: small digits runs, and a run interrupted right after its first
checkpoint (to test resuming)."""

from __future__ import annotations

from typing import Any

import pytest

import robustctl.training.trainer as trainer_module
from robustctl.training import checkpoint_path, fit, load_checkpoint


def digits_overrides(tmp_path, *extra: str) -> list[str]:
    """A ResNet-20 of width 8 on the bundled digits (about a second per epoch on 2 cores), no
    detector, no threat model, stored under ``tmp_path``."""
    return [
        "dataset=digits",
        "model.width=8",
        "trainer.batch_size=64",
        "trainer.device=cpu",
        "trainer.num_threads=2",
        "defense=none",
        "threat_model=none",
        f"work_dir={tmp_path}",
        *extra,
    ]


class Interrupted(Exception):
    """Raised in place of the rest of a run, right after its first checkpoint."""


def interrupted_checkpoint(monkeypatch, cfg: Any, data: Any, chash: str) -> dict[str, Any]:
    """Train ``cfg`` until its first checkpoint is written, stop there, and return that
    checkpoint (as ``fit(..., resume_state=...)`` takes it)."""
    real_save = trainer_module.save_checkpoint

    def save_then_die(state, path):
        real_save(state, path)
        raise Interrupted

    with monkeypatch.context() as patch:
        patch.setattr(trainer_module, "save_checkpoint", save_then_die)
        with pytest.raises(Interrupted):
            fit(cfg, data, chash=chash)
    return load_checkpoint(checkpoint_path(cfg, chash))
