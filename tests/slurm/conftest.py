"""The `slurm` tests run sweeps on a real SLURM cluster: the throw-away single-node one that
``.ci/slurm-cluster up`` starts (CI does, as root on Debian), or any cluster whose ``sinfo``
answers here with a ``debug`` partition. Elsewhere they are skipped, with the reason."""

from __future__ import annotations

import shutil
import subprocess

import pytest

PARTITION = "debug"


def cluster_state() -> str | None:
    """The state of the ``debug`` partition's node (``idle``, ``mixed``...), None when no
    cluster answers."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = subprocess.run(
            ["sinfo", "-h", "-p", PARTITION, "-o", "%T"],
            capture_output=True,
            text=True,
            timeout=15,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    states = out.stdout.split()
    usable = [s for s in states if s.rstrip("*~#").startswith(("idle", "mixed", "allocated"))]
    return usable[0] if out.returncode == 0 and usable else None


def pytest_collection_modifyitems(config, items):
    slurm_items = [item for item in items if "slurm" in item.keywords]
    if not slurm_items or cluster_state() is not None:
        return
    skip = pytest.mark.skip(
        reason=f"slurm test: no SLURM cluster with a usable '{PARTITION}' partition answers "
        "here (start the throw-away one with `sudo .ci/slurm-cluster up`)"
    )
    for item in slurm_items:
        item.add_marker(skip)
