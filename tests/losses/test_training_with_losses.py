"""The new losses inside the real trainer: RCE's negation, Siamese partners reaching the loss,
and bit-identical resume with PDM (partners drawn from the checkpointed generator) and with the
center loss (centers checkpointed)."""

from __future__ import annotations

import pytest
import torch

import robustctl.training.trainer as trainer_module
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.inference import predict
from robustctl.training import checkpoint_path, fit, load_checkpoint
from tests.runs import interrupted_checkpoint


def tiny(tmp_path, *extra: str) -> list[str]:
    return [
        "dataset=synthetic",
        "dataset.num_samples=320",
        "trainer.batch_size=32",
        "trainer.device=cpu",
        "trainer.num_threads=1",
        "trainer.eval_batch_size=128",
        f"work_dir={tmp_path}",
        *extra,
    ]


def test_rce_model_is_accurate_with_the_negation_and_wrong_without(tmp_path):
    _, cfg = compose(tiny(tmp_path, "loss=rce", "trainer.epochs=3"))
    data = load_dataset(cfg.dataset, cfg.work_dir)
    result = fit(cfg, data, chash="rce")
    model = result.model
    assert float(model.logit_sign) == -1.0 and result.meta["logit_sign"] == -1.0
    pred_logits, emb = predict(model, data.x_test)
    raw_logits = model.head(emb)
    accurate = (pred_logits.argmax(1) == data.y_test).float().mean().item()
    without = (raw_logits.argmax(1) == data.y_test).float().mean().item()
    assert accurate > 0.9
    assert without < 0.3
    state = load_checkpoint(result.checkpoint)
    assert float(state["model"]["logit_sign"]) == -1.0


def test_siamese_partners_reach_the_loss(tmp_path, monkeypatch):
    seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    real_build = trainer_module.build_loss

    def spying_build(cfg, **kw):
        loss = real_build(cfg, **kw)
        real_forward = loss.forward

        def forward(output, labels, pairs=None):
            assert pairs is not None and len(pairs.labels) == len(labels) == len(output.logits)
            seen.append((labels.clone(), pairs.labels.clone(), pairs.same.clone()))
            return real_forward(output, labels, pairs)

        loss.forward = forward
        return loss

    monkeypatch.setattr(trainer_module, "build_loss", spying_build)
    _, cfg = compose(tiny(tmp_path, "loss=pdm", "loss.q=0.25", "trainer.epochs=2"))
    data = load_dataset(cfg.dataset, cfg.work_dir)
    result = fit(cfg, data, chash="spy")
    labels, partner_labels, same = (torch.cat(t) for t in zip(*seen, strict=True))
    assert torch.equal(same.bool(), labels == partner_labels)
    n = len(same)
    assert abs(same.mean().item() - 0.25) < 4 * (0.25 * 0.75 / n) ** 0.5
    assert {"train/rce", "train/siamese", "train/rvl", "embed/mean_norm"} <= set(result.final)


@pytest.mark.parametrize("loss", ["pdm", "center"])
def test_resume_is_bit_identical(tmp_path, monkeypatch, loss):
    overrides = [f"loss={loss}", "trainer.epochs=2", "dataset.augment=true"]
    _, cfg = compose(tiny(tmp_path / "full", *overrides))
    data = load_dataset(cfg.dataset, cfg.work_dir)
    full = fit(cfg, data, chash="h")

    _, cfg2 = compose(tiny(tmp_path / "split", *overrides))
    state = interrupted_checkpoint(monkeypatch, cfg2, data, "h")
    assert state["epoch"] == 1
    resumed = fit(cfg2, data, chash="h", resume_state=state)

    assert resumed.resumed_from_epoch == 1
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key
    final = load_checkpoint(checkpoint_path(cfg2, "h"))
    reference = load_checkpoint(checkpoint_path(cfg, "h"))
    for key, value in reference["loss"].items():  # center buffers (empty dict for pdm)
        assert torch.equal(value, final["loss"][key]), key
    strip = [{k: v for k, v in h.items() if not k.startswith("time/")} for h in full.history]
    assert strip == [
        {k: v for k, v in h.items() if not k.startswith("time/")} for h in resumed.history
    ]
