"""Defensive distillation: the teacher's temperature loss and the student's soft-label loss
against numpy, the soft labels taken from the teacher's prediction view, the loss check at
composition, and the two runs: the student trains its teacher as its own run (once: a finished
teacher is reused) and names it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from robustctl import metric_keys as keys
from robustctl.cli import app
from robustctl.composition import compose
from robustctl.errors import ConfigError
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import build_loss
from robustctl.models import ModelOutput
from robustctl.train_defenses import (
    DistillationConfig,
    TemperatureConfig,
    build_train_defense,
    teacher_config,
)
from tests.test_cli import runs

T = 4.0


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 5, generator=g, dtype=torch.float64) * 5, torch.tensor([0, 1, 2, 3, 4, 0])


def test_teacher_loss_is_t_times_the_loss_at_temperature_t():
    logits, labels = batch()
    loss = build_train_defense(TemperatureConfig(temperature=T)).wrap_loss(
        build_loss(LOSS_OPTIONS.configs()["ce"])
    )
    value = loss(ModelOutput(logits, torch.zeros(6, 3)), labels).total.item()
    expected = -T * log_softmax(logits.numpy() / T)[np.arange(6), labels.numpy()].mean()
    assert value == pytest.approx(expected, rel=1e-12)
    assert value != pytest.approx(-T * log_softmax(logits.numpy())[np.arange(6), labels].mean())


@pytest.mark.parametrize("loss_name", ["ce", "rce"])
def test_student_loss_is_the_cross_entropy_to_the_teachers_soft_labels(loss_name):
    """p = softmax(teacher prediction logits / T) (the RCE teacher's are -Z), and
    L = -T mean sum p log softmax(student prediction logits / T)."""
    teacher_z, labels = batch(1)
    student_z, _ = batch(2)

    class Teacher(torch.nn.Module):
        logit_sign = torch.tensor(-1.0 if loss_name == "rce" else 1.0)

        def predict_logits(self, x):
            return self.logit_sign * teacher_z

    defense = build_train_defense(DistillationConfig(temperature=T), teacher=Teacher())
    loss = defense.wrap_loss(build_loss(LOSS_OPTIONS.configs()[loss_name]))
    hook = defense.for_epoch(torch.nn.Identity(), seed=0, epoch=0)
    x = torch.zeros(6, 1, 2, 2)
    assert hook(x, labels) is x  # the batch itself is unchanged
    value = loss(ModelOutput(student_z, torch.zeros(6, 3)), labels).total.item()
    sign = -1.0 if loss_name == "rce" else 1.0
    p = np.exp(log_softmax(sign * teacher_z.numpy() / T))
    expected = -T * (p * log_softmax(sign * student_z.numpy() / T)).sum(1).mean()
    assert value == pytest.approx(expected, rel=1e-6)
    assert loss.logit_sign == sign


def test_the_teacher_is_the_same_temperature_and_losses_that_need_labels_are_refused():
    assert teacher_config(DistillationConfig(temperature=20.0)) == TemperatureConfig(
        temperature=20.0
    )
    with pytest.raises(ConfigError, match="train_defense.temperature"):
        DistillationConfig(temperature=0.0)
    for loss in ("pdm", "center", "siamese_rvl"):
        with pytest.raises(ConfigError, match="needs loss=ce or loss=rce"):
            compose(["train_defense=distillation", f"loss={loss}"])


@pytest.mark.slow  # ~9-12 s: the system tier keeps `make test` under 8 min
def test_the_student_trains_its_teacher_as_its_own_run_once_and_names_it(tiny, tmp_path):
    args = ["train", *tiny, "train_defense=distillation", "train_defense.temperature=10"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    client, found = runs(tmp_path)
    assert len(found) == 2
    teacher, student = found  # the teacher's run starts first
    assert teacher.data.tags[keys.VARIANT_TAG] == "train_defense=distill_teacher(temperature=10.0)"
    assert student.data.tags[keys.VARIANT_TAG] == "train_defense=distillation(temperature=10.0)"
    assert student.data.tags[keys.TEACHER_RUN_TAG] == teacher.info.run_id
    assert teacher.data.params["train_defense.name"] == "distill_teacher"
    # the teacher finished training: training the student again reuses it
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    _, again = runs(tmp_path)
    assert len(again) == 3
    assert again[-1].data.tags[keys.TEACHER_RUN_TAG] == teacher.info.run_id
    assert again[-1].data.tags[keys.TEACHER_CHECKPOINT_TAG].endswith("last.pt")
