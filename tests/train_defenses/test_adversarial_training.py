"""Adversarial training: the batch rewrite (which examples, within the budget, in evaluation mode,
batch-norm statistics untouched), the config's checks, bit-identical resume, and the point of it:
PGD training raises accuracy under PGD on digits above the undefended model's."""

from __future__ import annotations

import pytest
import torch

from robustctl.attacks import PGD
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.errors import ConfigError
from robustctl.models import ResNet
from robustctl.train_defenses import (
    AdversarialTraining,
    AdversarialTrainingConfig,
    build_train_defense,
    epoch_seed,
    train_defense_configs,
)
from robustctl.training import fit
from tests.runs import digits_overrides as overrides
from tests.runs import interrupted_checkpoint


def test_options_and_their_defaults():
    options = train_defense_configs()
    assert set(options) == {
        "none",
        "fgsm_at",
        "pgd_at",
        "trades",
        "distill_teacher",
        "distillation",
    }
    assert build_train_defense(options["none"]) is None and build_train_defense(None) is None
    fgsm, pgd = options["fgsm_at"], options["pgd_at"]
    assert (fgsm.attack, fgsm.mix) == ("fgsm", 0.5)  # Goodfellow et al.: half of each batch
    assert (pgd.attack, pgd.mix, pgd.attack_params["steps"]) == ("pgd", 1.0, 7)  # Madry et al.


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"mix": 0.0}, "train_defense.mix"),
        ({"mix": 1.5}, "train_defense.mix"),
        ({"attack": "blur"}, "train_defense.attack"),
        ({"attack_params": {"eps": -1.0}}, "train_defense.attack_params"),
        ({"attack_params": {"epsilon": 0.1}}, "train_defense.attack_params"),
    ],
)
def test_bad_values_are_refused_naming_the_key(fields, key):
    with pytest.raises(ConfigError, match=key):
        AdversarialTrainingConfig(**fields)


def test_batch_rewrite_replaces_the_mix_fraction_within_the_budget_in_eval_mode():
    torch.manual_seed(0)
    model = ResNet(depth=8, width=4, in_channels=1).train()
    stats_before = model.stem[1].running_mean.clone()
    config = AdversarialTrainingConfig(
        attack="pgd", attack_params={"eps": 0.1, "steps": 3}, mix=0.25
    )
    adversary = AdversarialTraining(config).for_epoch(model, seed=3, epoch=2)
    x = torch.rand(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = torch.arange(8) % 10
    out = adversary(x, y)
    assert model.training  # crafting ran in eval mode and gave training mode back
    assert torch.equal(model.stem[1].running_mean, stats_before)  # no batch-norm update
    assert torch.equal(out[2:], x[2:])  # round(0.25 * 8) = 2 examples replaced
    delta = (out[:2] - x[:2]).abs()
    assert delta.max() <= 0.1 + 1e-6 and delta.max() > 0.05
    assert out.min() >= 0 and out.max() <= 1
    # the same epoch and seed craft the same examples (PGD's random start is seeded); another
    # epoch draws another start
    again = AdversarialTraining(config).for_epoch(model, seed=3, epoch=2)(x, y)
    other = AdversarialTraining(config).for_epoch(model, seed=3, epoch=3)(x, y)
    assert torch.equal(out, again) and not torch.equal(out, other)
    assert epoch_seed(3, 2) != epoch_seed(2, 3)


@pytest.mark.parametrize(
    "defense",
    [
        ("train_defense=pgd_at", "train_defense.attack_params.steps=2"),
        ("train_defense=trades", "train_defense.steps=2"),
    ],
    ids=lambda d: d[0].split("=")[1],
)
def test_resume_is_bit_identical(tmp_path, monkeypatch, defense):
    extra = (*defense, "trainer.epochs=2", "trainer.max_batches=4")
    _, cfg = compose(overrides(tmp_path / "full", *extra))
    data = load_dataset(cfg.dataset, cfg.work_dir)
    full = fit(cfg, data, chash="h")
    _, cfg2 = compose(overrides(tmp_path / "split", *extra))
    state = interrupted_checkpoint(monkeypatch, cfg2, data, "h")
    assert state["epoch"] == 1 and state["meta"]["train_defense"] == defense[0].split("=")[1]
    resumed = fit(cfg2, data, chash="h", resume_state=state)
    for key, value in full.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


def robust_accuracy(model, x, y, eps: float) -> float:
    """Accuracy under PGD (20 steps, 2 restarts) at ``eps``: a misclassified image counts as
    broken without an attack."""
    model.eval()
    with torch.no_grad():
        correct = model.predict_logits(x).argmax(1) == y
    result = PGD(model, eps=eps, steps=20, restarts=2, seed=0)(x, y)
    return (correct & ~result.success).float().mean().item()


@pytest.mark.slow
@pytest.mark.parametrize(
    "defense",
    [
        (
            "train_defense=pgd_at",
            "train_defense.attack_params.eps={eps}",
            "train_defense.attack_params.steps=5",
        ),
        (
            "train_defense=trades",
            "train_defense.eps={eps}",
            "train_defense.steps=5",
            "train_defense.step_size=0.03",
        ),
    ],
    ids=lambda d: d[0].split("=")[1],
)
def test_adversarial_training_raises_accuracy_under_pgd(tmp_path, defense):
    """Madry et al.'s claim (PGD training) and Zhang et al.'s (TRADES) at a small budget: same
    data, model, seed and epochs, with and without the defense; attacked by a stronger PGD
    (20 steps, 2 restarts) at the trained eps."""
    eps = 0.1
    common = ("trainer.epochs=10",)
    _, plain_cfg = compose(overrides(tmp_path / "plain", *common))
    data = load_dataset(plain_cfg.dataset, plain_cfg.work_dir)
    plain = fit(plain_cfg, data, chash="plain").model
    name = defense[0].split("=")[1]
    _, at_cfg = compose(overrides(tmp_path / "at", *common, *(d.format(eps=eps) for d in defense)))
    trained = fit(at_cfg, data, chash="at").model
    x, y = data.x_test, data.y_test
    plain_robust = robust_accuracy(plain, x, y, eps)
    at_robust = robust_accuracy(trained, x, y, eps)
    with torch.no_grad():
        at_clean = (trained.predict_logits(x).argmax(1) == y).float().mean().item()
    print(
        f"robust accuracy at eps {eps}: undefended {plain_robust:.3f}, {name} {at_robust:.3f} "
        f"({name} clean {at_clean:.3f})"
    )
    assert at_robust > plain_robust + 0.2
    assert at_clean > 0.8
