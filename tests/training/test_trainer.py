"""Trainer: determinism, resume equality, divergence handling, checkpoint safety, schedules."""

from __future__ import annotations

import math

import pytest
import torch

from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.errors import CheckpointError, TrainingDiverged
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import LossOutput, TrainingLoss
from robustctl.training import (
    checkpoint_path,
    fit,
    load_checkpoint,
    model_from_checkpoint,
    save_checkpoint,
)
from robustctl.training.schedule import learning_rate

TIME_KEYS = ("time/epoch_s",)


def strip_time(history):
    return [{k: v for k, v in h.items() if k not in TIME_KEYS} for h in history]


def setup(tiny, extra=()):
    raw, cfg = compose([*tiny, *extra])
    return cfg, load_dataset(cfg.dataset, cfg.work_dir)


def test_same_seed_same_metrics_and_weights(tiny):
    cfg, data = setup(tiny)
    a = fit(cfg, data, chash="a")
    b = fit(cfg, data, chash="b")
    assert strip_time(a.history) == strip_time(b.history)
    for (ka, va), (_, vb) in zip(
        a.model.state_dict().items(), b.model.state_dict().items(), strict=True
    ):
        assert torch.equal(va, vb), ka
    c = fit(*setup(tiny, ["trainer.seed=1"]), chash="c")
    assert strip_time(c.history) != strip_time(a.history)


class StopAfterFirstCheckpoint:
    """A tracker double that interrupts training right after epoch 1's checkpoint is written."""

    run_id = None

    def log_metrics(self, metrics, step=None):
        pass

    def log_artifact(self, path, artifact_path=None):
        raise KeyboardInterrupt


def test_resume_gives_the_same_final_metrics_as_an_uninterrupted_run(tiny):
    cfg, data = setup(tiny, ["trainer.epochs=3"])
    full = fit(cfg, data, chash="full")
    with pytest.raises(KeyboardInterrupt):
        fit(cfg, data, chash="cut", tracker=StopAfterFirstCheckpoint())
    state = load_checkpoint(checkpoint_path(cfg, "cut"))
    assert state["epoch"] == 1
    resumed = fit(cfg, data, chash="cut", resume_state=state)
    assert resumed.resumed_from_epoch == 1
    assert strip_time(resumed.history) == strip_time(full.history)
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k


def test_resume_refuses_a_checkpoint_of_another_config(tiny):
    cfg, data = setup(tiny, ["trainer.epochs=1"])
    fit(cfg, data, chash="one")
    with pytest.raises(CheckpointError, match="different config"):
        fit(cfg, data, chash="two", resume_state=load_checkpoint(checkpoint_path(cfg, "one")))


class NanAfter(TrainingLoss):
    def __init__(self, steps: int) -> None:
        super().__init__()
        self.left = steps

    def forward(self, output, labels):
        self.left -= 1
        loss = torch.nn.functional.cross_entropy(output.logits, labels)
        if self.left < 0:
            loss = loss * float("nan")
        return LossOutput(loss, {"ce": loss})


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_checkpoint(tiny, monkeypatch):
    cfg, data = setup(tiny, ["trainer.epochs=3"])
    per_epoch = math.ceil(len(data.y_train) / cfg.trainer.batch_size)
    monkeypatch.setitem(
        LOSS_OPTIONS.implementations, "ce", lambda cfg: NanAfter(steps=per_epoch + 2)
    )  # 3rd batch of epoch 2
    with pytest.raises(TrainingDiverged, match=r"epoch 2, batch 3") as err:
        fit(cfg, data, chash="nan")
    assert "trainer.lr" in str(err.value)
    assert load_checkpoint(checkpoint_path(cfg, "nan"))["epoch"] == 1


def test_checkpoint_round_trip_rebuilds_the_same_model(tiny):
    cfg, data = setup(tiny, ["trainer.epochs=1"])
    result = fit(cfg, data, chash="rt")
    model = model_from_checkpoint(load_checkpoint(result.checkpoint))
    x = data.x_test[:8]
    torch.testing.assert_close(model.predict_logits(x), result.model.predict_logits(x))


def test_checkpoint_loading_refuses_code_truncation_and_foreign_files(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    evil = tmp_path / "evil.pt"
    torch.save({"format": "robustctl-checkpoint/1", "payload": Evil()}, evil)
    with pytest.raises(CheckpointError, match="unsafe"):
        load_checkpoint(evil)
    assert not (tmp_path / "pwned").exists()

    good = save_checkpoint({"model": {"w": torch.ones(1000)}}, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a robustctl checkpoint"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")
    assert not list(tmp_path.glob("*.tmp"))


def test_learning_rate_schedules_by_hand():
    assert learning_rate(0, 100, base_lr=0.1, schedule="cosine") == pytest.approx(0.1)
    assert learning_rate(50, 100, base_lr=0.1, schedule="cosine") == pytest.approx(0.05)
    assert learning_rate(75, 100, base_lr=0.1, schedule="cosine") == pytest.approx(
        0.05 * (1 + math.cos(0.75 * math.pi))
    )
    assert learning_rate(49, 100, base_lr=0.1, schedule="step") == pytest.approx(0.1)
    assert learning_rate(50, 100, base_lr=0.1, schedule="step") == pytest.approx(0.01)
    assert learning_rate(80, 100, base_lr=0.1, schedule="step") == pytest.approx(0.001)
    assert learning_rate(
        4, 100, base_lr=0.1, schedule="constant", warmup_fraction=0.1
    ) == pytest.approx(0.05)
