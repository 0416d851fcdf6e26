"""A model that masks its gradients (input quantization without BPDA) trips the sanity checks,
where the same network without the mask passes them."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from robustctl.evaluation.sanity import FAILED, PASSED, sanity_checks
from robustctl.threat_models import run_threat_model
from robustctl.threat_models.convergence import ConvergenceConfig


class QuantizedInput(torch.nn.Module):
    """A deliberately masked model: the input is rounded to 4 levels (zero gradient almost
    everywhere) before the trained network, with no straight-through estimator."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model
        self.logit_sign = model.logit_sign

    def layer_outputs(self, x, layers):
        return self.model.layer_outputs(torch.round(x * 3) / 3, layers)

    def embed(self, x):
        return self.layer_outputs(x, ("embedding",))["embedding"]

    def head(self, z):
        return self.model.head(z)

    def predict_logits(self, x):
        return self.logit_sign * self.head(self.embed(x))

    def forward(self, x):
        return self.predict_logits(x)


def test_a_gradient_masked_model_trips_a_check(target):
    cfg, model, data = target
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["graybox"],
        attacks=["deepfool"],
        resiliency_attacks=[],
        num_samples=30,
    )
    masked_cfg = dataclasses.replace(cfg, threat_model=tm, defense=cfg.defense)
    for candidate, expect in ((model, PASSED), (QuantizedInput(model).eval(), FAILED)):
        metrics: dict[str, float] = {}
        for result in run_threat_model(masked_cfg, candidate, data):
            metrics.update(result.metrics)
        by_name = {c.name: c for c in sanity_checks(metrics)}
        assert by_name["unbounded_attack_succeeds"].status == expect, metrics


@pytest.mark.slow  # the white-box and query-based stages on two models: ~1 min
def test_a_gradient_free_attack_beating_the_gradient_attack_trips_the_query_check(target):
    """Negative control of ``query_not_stronger_than_whitebox``: on the quantized model C&W-wb's
    gradients vanish while Square, which never reads one, still breaks points through the
    detector; on the plain network the check passes."""
    cfg, model, data = target
    tm = dataclasses.replace(
        cfg.threat_model,
        stages=["whitebox", "blackbox"],
        whitebox_attacks=["cw_wb"],
        convergence=ConvergenceConfig(max_doublings=0),
        sanity_samples=0,
        num_samples=40,
        attack_params={"square": {"queries": 500, "eps": 0.3}},
        blackbox=dataclasses.replace(
            cfg.threat_model.blackbox, kind="query", query_attacks=["square"]
        ),
    )
    run_cfg = dataclasses.replace(cfg, threat_model=tm)
    for candidate, expect in ((model, PASSED), (QuantizedInput(model).eval(), FAILED)):
        metrics: dict[str, float] = {}
        for result in run_threat_model(run_cfg, candidate, data):
            metrics.update(result.metrics)
        check = {c.name: c for c in sanity_checks(metrics)}["query_not_stronger_than_whitebox"]
        assert check.status == expect, (check, metrics)
