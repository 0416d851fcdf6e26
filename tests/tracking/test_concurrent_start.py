"""Commands started together on a fresh SQLite store: every one of them gets its run.

MLflow creates a new database's tables on first use; processes that start together used to race
to create them, and the losers failed with SQLAlchemy's ``table ... already exists``."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

# Each process imports everything first, then waits for the "go" file, so that all of them
# open the store within a few milliseconds of each other.
OPEN_A_RUN = """
import os, sys, time
from robustctl.tracking.run import RunTracker
go, uri, ready = sys.argv[1], sys.argv[2], sys.argv[3]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
tracker = RunTracker(uri, "robustctl")
tracker.start("concurrent", {})
tracker.finish()
"""


@pytest.mark.slow  # ~9-12 s: the system tier keeps `make test` under 8 min
def test_processes_opening_a_new_store_together_all_get_their_run(tmp_path):
    uri = f"sqlite:///{tmp_path / 'fresh' / 'mlruns.db'}"
    (tmp_path / "fresh").mkdir()
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_A_RUN, str(go), uri, str(tmp_path / f"ready{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(3)
    ]
    deadline = time.time() + 120
    while len(list(tmp_path.glob("ready*"))) < 3 and time.time() < deadline:
        time.sleep(0.05)
    go.touch()
    outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    failures = [err.strip().splitlines()[-1] for code, err in outcomes if code != 0]
    assert not failures, failures
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("robustctl")
    assert len(client.search_runs([experiment.experiment_id])) == 3
