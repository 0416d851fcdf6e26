"""What a run logs so that it can be repeated: git state, package versions, config hash."""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "torch",
    "torchvision",
    "numpy",
    "scikit-learn",
    "mlflow",
    "hydra-core",
    "omegaconf",
    "robustctl",
)


def git_state(folder: str | Path | None = None) -> dict[str, str]:
    """Commit and dirty flag of the repository holding robustctl's source (empty when none)."""
    folder = Path(folder or Path(__file__).resolve().parents[2])
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {}
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=10,
        )
        return {
            "git_commit": commit.stdout.strip(),
            "git_dirty": str(bool(dirty.stdout.strip())).lower(),
        }
    except (OSError, subprocess.SubprocessError):
        return {}


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# keys that change neither what is trained nor what is measured: where files go, how the run is
# tracked, whether it resumes
_WHERE_AND_HOW = (
    "tracking",
    "trainer.resume",
    "trainer.checkpoint_dir",
    "work_dir",
    "debug",
    "evaluate",
)
EVALUATION_GROUPS = ("attack", "defense", "threat_model")
# ... and those that change only how fast or on which machine (or the seed, which the report
# averages over)
_SEED_AND_MACHINE = (
    "trainer.seed",
    "trainer.device",
    "trainer.num_threads",
    "trainer.eval_batch_size",
    "trainer.precision",  # auto resolves per machine, like trainer.device (tag: train_precision)
    "trainer.channels_last",
    "trainer.compile",
    "threat_model.batch_size",
)
# the config keys (a group name covers the group) a fingerprint leaves out; the report applies the
# same list to the flattened params of runs logged before fingerprints existed
FINGERPRINT_IGNORED = (*_WHERE_AND_HOW, *_SEED_AND_MACHINE)
_HASH_EXCLUDED = (*_WHERE_AND_HOW, *EVALUATION_GROUPS)


# groups added after runs were logged: their ``none`` option is left out of every hash, so that
# configs without them keep the hashes (checkpoints, fingerprints) they had
OPTIONAL_GROUPS = ("transform", "train_defense")


def _hash_without(data: dict[str, Any], excluded: tuple[str, ...]) -> str:
    data = json.loads(json.dumps(data, default=str))
    for group in OPTIONAL_GROUPS:
        if data.get(group) == {"name": "none"}:
            data.pop(group)
    for key in excluded:
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.get(p, {})
        node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]


def config_hash(container: dict[str, Any]) -> str:
    """Short hash of the config parts that determine training (same hash = same trained model)."""
    return _hash_without(container, _HASH_EXCLUDED)


def training_fingerprint(container: dict[str, Any]) -> str:
    """:func:`config_hash` without the seed and machine settings: equal for the seeds of one
    training configuration."""
    return _hash_without(container, _HASH_EXCLUDED + FINGERPRINT_IGNORED)


def evaluation_fingerprint(container: dict[str, Any]) -> str:
    """Short hash of what is measured: the attack, defense and threat-model groups (the attack
    budgets, the attacked subset, the detector), without the batch size."""
    part = {group: container.get(group) for group in EVALUATION_GROUPS}
    return _hash_without(part, FINGERPRINT_IGNORED)


def run_fingerprint(training: str, evaluation: str) -> str:
    """One run's fingerprint: runs with equal fingerprints trained the same configuration (seed
    aside) and measured it under the same threat-model budget, so their numbers may be averaged."""
    return hashlib.sha256(f"{training}:{evaluation}".encode()).hexdigest()[:12]


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"a": {"b": 1}} -> {"a.b": "1"}`` for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat
