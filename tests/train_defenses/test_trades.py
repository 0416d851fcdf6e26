"""TRADES: the KL term against hand-computed values, the loss it adds to the run's loss, the
crafting of x' (inside the ball and the box, stronger than random noise on the same ball,
evaluation mode), the presets' budgets and the config's checks."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from robustctl.composition import compose
from robustctl.errors import ConfigError
from robustctl.losses import build_loss
from robustctl.losses.base import TrainingLoss
from robustctl.models import ModelOutput, ResNet
from robustctl.train_defenses import build_train_defense
from robustctl.train_defenses.trades import (
    TradesConfig,
    TradesLoss,
    kl_divergence,
    trades_examples,
)


def test_kl_divergence_matches_hand_computed_values():
    # p = (1/2, 1/2), q = (3/4, 1/4): KL = 1/2 ln(2/3) + 1/2 ln 2 = 1/2 ln(4/3)
    p = torch.tensor([[0.0, 0.0], [5.0, -5.0]])
    q = torch.tensor([[math.log(3.0), 0.0], [5.0, -5.0]])
    kl = kl_divergence(p, q)
    assert kl[0].item() == pytest.approx(0.5 * math.log(4 / 3), rel=1e-6)
    assert kl[1].item() == pytest.approx(0.0, abs=1e-7)  # q = p
    # saturated logits stay finite
    assert torch.isfinite(kl_divergence(torch.tensor([[800.0, 0.0]]), torch.tensor([[0.0, 800.0]])))


class _Constant(TrainingLoss):
    """A base loss whose value is known: 2.5, term ``base`` = 2.5."""

    logit_sign = -1.0

    def forward(self, output, labels, pairs=None):
        value = torch.tensor(2.5)
        return value, {"base": value}


def test_the_loss_is_the_base_loss_plus_beta_times_the_batch_mean_kl_on_the_prediction_view():
    loss = TradesLoss(_Constant(), beta=6.0)
    # raw Z; the prediction view is -Z (logit_sign -1, as RCE and PDM): p = softmax(-Z)
    z = torch.tensor([[0.0, 0.0], [-math.log(3.0), 0.0]])
    loss.adversarial_logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    total, terms = loss(ModelOutput(z, torch.zeros(2, 4)), torch.tensor([0, 1]))
    # first: KL((1/2, 1/2) || (3/4, 1/4)) = 1/2 ln(4/3); second: p = q = (3/4, 1/4): 0
    kl = 0.5 * (0.5 * math.log(4 / 3))
    assert terms["trades_kl"].item() == pytest.approx(kl, rel=1e-6)
    assert total.item() == pytest.approx(2.5 + 6.0 * kl, rel=1e-6)
    assert terms["base"].item() == 2.5
    # the adversarial outputs are one batch's: a second call without new ones is refused
    with pytest.raises(RuntimeError, match="TradesBatch"):
        loss(ModelOutput(z, torch.zeros(2, 4)), torch.tensor([0, 1]))


def test_crafting_stays_in_ball_and_box_beats_random_noise_and_leaves_batch_norm_alone():
    torch.manual_seed(0)
    model = ResNet(depth=8, width=4, in_channels=1).train()
    stats_before = model.stem[1].running_mean.clone()
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    eps = 0.1
    x_adv = trades_examples(
        model, x, eps=eps, steps=10, step_size=0.025, generator=torch.Generator().manual_seed(2)
    )
    assert model.training and torch.equal(model.stem[1].running_mean, stats_before)
    assert (x_adv - x).abs().max() <= eps + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    model.eval()
    with torch.no_grad():
        clean = model.predict_logits(x)
        crafted = kl_divergence(clean, model.predict_logits(x_adv))
        signs = torch.randint(0, 2, x.shape, generator=torch.Generator().manual_seed(3)) * 2 - 1
        noisy = (x + eps * signs).clamp(0, 1)  # a random corner of the same ball
        random = kl_divergence(clean, model.predict_logits(noisy))
    assert crafted.mean() > 3 * random.mean()
    assert (crafted > random).float().mean() >= 0.9


def test_the_hook_sets_the_adversarial_logits_with_their_graph_and_keeps_the_batch():
    torch.manual_seed(0)
    model = ResNet(depth=8, width=4, in_channels=1).train()
    defense = build_train_defense(TradesConfig(steps=2))
    loss = defense.wrap_loss(build_loss(compose(["loss=ce"])[1].loss))
    hook = defense.for_epoch(model, seed=0, epoch=0)
    x = torch.rand(8, 1, 8, 8)
    y = torch.arange(8)
    assert torch.equal(hook(x, y), x)
    out = model(x)
    total, terms = loss(ModelOutput(out[0], out[1]), y)
    assert total.item() == pytest.approx(
        F.cross_entropy(out[0], y).item() + 6.0 * terms["trades_kl"].item(), rel=1e-5
    )
    total.backward()  # the KL term reaches the weights through x' too
    assert model.head.weight.grad is not None and model.head.weight.grad.abs().sum() > 0


def test_presets_carry_the_authors_budgets():
    mnist = compose(["train_defense=trades-mnist"])[1].train_defense
    cifar = compose(["train_defense=trades-cifar10"])[1].train_defense
    assert (mnist.eps, mnist.steps, mnist.step_size, mnist.beta) == (0.3, 40, 0.01, 1.0)
    assert (cifar.eps, cifar.steps, cifar.step_size, cifar.beta) == (0.031, 10, 0.007, 6.0)


@pytest.mark.parametrize("key", ["beta", "eps", "step_size", "steps"])
def test_bad_values_are_refused_naming_the_key(key):
    with pytest.raises(ConfigError, match=f"train_defense.{key}"):
        TradesConfig(**{key: 0})
