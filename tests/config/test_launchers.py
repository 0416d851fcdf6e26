"""Launchers: joblib (local parallel) and submitit (SLURM) compose with the project's config."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from robustctl.config import config_dir


@pytest.mark.parametrize(
    "launcher, target",
    [
        ("joblib", "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"),
        ("submitit_slurm", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"),
        ("submitit_local", "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"),
    ],
)
def test_launcher_configs_compose(launcher, target):
    overrides = [f"hydra/launcher={launcher}"]
    if launcher == "submitit_slurm":
        overrides += [
            "hydra.launcher.partition=gpu",
            "hydra.launcher.gpus_per_node=1",
            "hydra.launcher.timeout_min=600",
        ]
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    assert cfg.hydra.launcher._target_ == target
    if launcher == "submitit_slurm":
        assert cfg.hydra.launcher.partition == "gpu" and cfg.hydra.launcher.gpus_per_node == 1
    # sweeps keep one MLflow store: jobs never chdir into their output folders
    assert cfg.hydra.job.chdir is False and cfg.hydra.sweep.dir.startswith("multirun/")
