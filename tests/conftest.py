"""Shared fixtures: tiny, seeded settings that train in about a second on 2 CPU cores."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(2)


def pytest_collection_modifyitems(config, items):
    """``gpu`` tests run only where CUDA is available (``make test-gpu`` on a GPU machine)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="gpu test: no CUDA device on this machine (make test-gpu)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch, tmp_path):
    """No test reads the user's MLflow server or writes outside its tmp folder."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ROBUSTCTL_FAULT_KILL_AT_STEP", raising=False)
    monkeypatch.setenv("GIT_PYTHON_REFRESH", "quiet")
    yield


def tiny_overrides(work_dir) -> list[str]:
    """Overrides for a ~1 s training run on the synthetic dataset, stored under ``work_dir``."""
    return [
        "dataset=synthetic",
        "dataset.num_samples=240",
        "trainer.epochs=2",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "trainer.eval_batch_size=64",
        "defense=none",
        "threat_model=none",
        f"work_dir={work_dir}",
    ]


@pytest.fixture
def tiny(tmp_path) -> list[str]:
    """:func:`tiny_overrides` under tmp_path."""
    return tiny_overrides(tmp_path)
