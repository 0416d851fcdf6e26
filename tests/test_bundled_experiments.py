"""Every bundled experiment composes and validates with its sweep's first and last values (every
key at once), so a typo in an override or a value out of range fails here, not an hour into the
sweep."""

from __future__ import annotations

import pytest

from robustctl.composition import compose
from robustctl.experiments import available, load_experiment


@pytest.mark.parametrize("name", available())
def test_every_job_of_a_bundled_experiment_composes(name):
    exp = load_experiment(name)
    first = {k: values[0] for k, values in exp.sweep.items()}
    last = {k: values[-1] for k, values in exp.sweep.items()}
    for chosen in [first] if first == last else [first, last]:
        jobs = [f"{k}={v}" for k, v in chosen.items()]
        _, cfg = compose([*exp.overrides, *jobs])
        for job in jobs:  # the swept value reached the validated config
            key, value = job.split("=", 1)
            node = cfg
            for part in key.split("."):
                node = getattr(node, part)
            name_of = getattr(node, "name", node)
            assert str(name_of) == value, (name, key)
