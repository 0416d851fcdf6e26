"""One embedding pass per evaluation: clean accuracy, the diagnostics, the detector fit and the
threat-model context share the model's outputs on each split instead of recomputing them."""

from __future__ import annotations

import copy

import torch

from robustctl import metric_keys as keys
from robustctl.evaluation.clean_stage import clean_stage
from robustctl.inference import ModelOutputs, predict
from robustctl.threat_models import prepare


def count_inference_rows(model):
    """Wrap ``model.embed``; the returned list's first entry counts images embedded without grad
    (inference passes; the gradient diagnostics run with grad and are not counted)."""
    seen = [0]
    embed = model.embed

    def counting(x):
        if not torch.is_grad_enabled():
            seen[0] += len(x)
        return embed(x)

    model.embed = counting
    return seen


def test_the_clean_stage_and_the_threat_context_embed_each_split_once(target):
    cfg, model, data = target
    model = copy.deepcopy(model)
    seen = count_inference_rows(model)
    outputs = ModelOutputs(model, data, cfg.evaluate.batch_size)
    clean = clean_stage(cfg, model, data, "ce", outputs)
    ctx = prepare(cfg, model, data, outputs=outputs)
    assert seen[0] == len(data.y_train) + len(data.y_val) + len(data.y_test)
    # the shared outputs are the model's: same accuracy and clean predictions as a fresh pass
    logits, _ = predict(model, data.x_test)
    accuracy = (logits.argmax(1) == data.y_test).float().mean().item()
    assert clean.metrics[keys.CLEAN_ACCURACY] == accuracy
    assert torch.equal(ctx.clean_pred, predict(model, ctx.x)[0].argmax(1))
