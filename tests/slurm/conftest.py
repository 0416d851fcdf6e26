"""The `slurm` tests run sweeps on a real SLURM cluster: the throw-away single-node one that
``.ci/slurm-cluster up`` starts (CI does, as root on Debian), or any cluster whose ``sinfo``
answers here with a ``debug`` partition. Elsewhere they are skipped, with the reason; where
``ROBUSTCTL_REQUIRE_SLURM=1`` (CI, once its cluster is up) they fail instead."""

from __future__ import annotations

import os
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


REQUIRE = "ROBUSTCTL_REQUIRE_SLURM"  # set by .ci/run once its cluster is up: fail, never skip


@pytest.fixture(autouse=True)
def _cluster() -> None:
    if cluster_state() is not None:
        return
    reason = (
        f"no SLURM cluster with a usable '{PARTITION}' partition answers here (start the "
        "throw-away one with `sudo .ci/slurm-cluster up`)"
    )
    if os.environ.get(REQUIRE) == "1":
        pytest.fail(f"{REQUIRE}=1 but {reason}")
    pytest.skip(f"slurm test: {reason}")
