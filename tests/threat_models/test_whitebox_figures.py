"""The white-box stage leaves no matplotlib figure open (a long experiment's memory stays flat)."""

from __future__ import annotations

import matplotlib.pyplot as plt

from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.threat_models import prepare, whitebox
from robustctl.training import fit


def test_the_whitebox_stage_opens_no_pyplot_figure(tmp_path):
    _, cfg = compose(
        [
            "dataset=synthetic",
            "dataset.num_samples=80",
            "model.width=4",
            "trainer.epochs=1",
            "trainer.max_batches=1",
            "trainer.batch_size=32",
            "trainer.device=cpu",
            "defense=kde",
            "threat_model=whitebox",
            "threat_model.num_samples=8",
            "threat_model.min_pairs=2",
            "threat_model.whitebox.binary_steps=1",
            "threat_model.whitebox.steps=5",
            "threat_model.fmn_wb.steps=5",
            "threat_model.convergence.max_doublings=1",
            "threat_model.sanity_samples=0",
            f"work_dir={tmp_path}",
        ]
    )
    data = load_dataset(cfg.dataset, cfg.work_dir)
    ctx = prepare(cfg, fit(cfg, data, chash="figures").model, data)
    before = set(plt.get_fignums())
    result = whitebox.run(ctx)
    assert set(plt.get_fignums()) == before
    figure = result.figures["plots/whitebox/success_vs_budget.png"]
    figure.savefig(tmp_path / "curve.png")  # still drawable without pyplot
    assert (tmp_path / "curve.png").stat().st_size > 0
