"""The training step's speed settings: what each resolves to, that bf16 and channels_last really
change how the step runs (and only that), and that a checkpoint cannot resume on another device."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.errors import CheckpointError, ConfigError
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import build_loss
from robustctl.models import ResNet
from robustctl.training import checkpoint_path, fit, load_checkpoint
from robustctl.training.speed import ACCELERATOR_SYNC_EVERY, StepSettings
from robustctl.training.trainer import train_step


def trainer(**kw):
    return SimpleNamespace(**{"precision": "auto", "channels_last": None, "compile": False, **kw})


def test_auto_settings_are_bf16_and_channels_last_on_cuda_and_fp32_on_cpu():
    cpu = StepSettings.resolve(trainer(), torch.device("cpu"))
    cuda = StepSettings.resolve(trainer(), torch.device("cuda"))
    assert (cpu.precision, cpu.channels_last, cpu.sync_every) == ("fp32", False, 1)
    assert (cuda.precision, cuda.channels_last) == ("bf16", True)
    assert cuda.sync_every == ACCELERATOR_SYNC_EVERY > 1
    forced = StepSettings.resolve(
        trainer(precision="fp32", channels_last=False), torch.device("cuda")
    )
    assert (forced.precision, forced.channels_last) == ("fp32", False)
    assert cpu.tags() == {
        "train_precision": "fp32",
        "train_channels_last": "false",
        "train_compile": "false",
    }


def test_an_unknown_precision_is_refused_with_the_key(tiny):
    with pytest.raises(ConfigError, match="trainer.precision"):
        compose([*tiny, "trainer.precision=fp16"])


@pytest.fixture(scope="module")
def batch():
    torch.manual_seed(0)
    model = ResNet(depth=8, num_classes=10, in_channels=3, width=8)
    x, y = torch.rand(16, 3, 16, 16), torch.randint(0, 10, (16,))
    return model, x, y, build_loss(LOSS_OPTIONS.configs()["ce"])


def step(model, x, y, loss_fn, **kw):
    settings = StepSettings.resolve(trainer(**kw), torch.device("cpu"))
    forward = settings.prepare(model)
    return train_step(forward, loss_fn, settings, torch.device("cpu"), x, y)


def test_bf16_autocasts_the_forward_pass_and_returns_fp32_outputs_and_loss(batch):
    model, x, y, loss_fn = batch
    out32, loss32 = step(model, x, y, loss_fn, precision="fp32")
    out16, loss16 = step(model, x, y, loss_fn, precision="bf16")
    assert out16.logits.dtype == out16.embedding.dtype == loss16.total.dtype == torch.float32
    assert not torch.equal(out16.logits, out32.logits)  # the forward pass ran in bf16 ...
    # ... to bf16's 8-bit mantissa (relative error ~2^-8 per op)
    torch.testing.assert_close(out16.logits, out32.logits, rtol=0.05, atol=0.05)
    assert loss16.total.item() == pytest.approx(loss32.total.item(), rel=0.02)


def test_channels_last_changes_the_memory_format_not_the_numbers(batch):
    model, x, y, loss_fn = batch
    plain, _ = step(model, x, y, loss_fn, channels_last=False)
    nhwc_model = ResNet(depth=8, num_classes=10, in_channels=3, width=8)
    nhwc_model.load_state_dict(model.state_dict())
    nhwc, _ = step(nhwc_model, x, y, loss_fn, channels_last=True)
    conv = next(m for m in nhwc_model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    torch.testing.assert_close(nhwc.logits, plain.logits, rtol=1e-5, atol=1e-5)


def test_bf16_training_on_the_cpu_learns_and_is_tagged(tiny):
    raw, cfg = compose([*tiny, "trainer.precision=bf16", "trainer.epochs=3"])
    result = fit(cfg, load_dataset(cfg.dataset, cfg.work_dir), chash="bf16")
    assert result.meta["step_settings"]["train_precision"] == "bf16"
    assert result.final["train/accuracy"] > 0.8  # 4 classes: chance is 0.25


def test_a_checkpoint_does_not_resume_on_another_device(tiny):
    raw, cfg = compose([*tiny, "trainer.epochs=1"])
    data = load_dataset(cfg.dataset, cfg.work_dir)
    fit(cfg, data, chash="dev")
    state = load_checkpoint(checkpoint_path(cfg, "dev"))
    assert state["rng"]["device"] == "cpu"
    state["rng"]["device"] = "cuda"  # as written by a GPU run
    with pytest.raises(CheckpointError, match="trained on cuda"):
        fit(cfg, data, chash="dev", resume_state=state)


@pytest.mark.slow
def test_compiled_training_matches_eager_training(tiny):
    """trainer.compile=true (torch.compile of the training forward pass) trains the same model as
    eager mode up to the fused kernels' round-off, and the checkpoint holds the uncompiled
    module's weights. On a ResNet-8: compilation time grows with the graph (a ResNet-20 took
    110 s on CI's 2 cores)."""
    results = {}
    for flag in ("false", "true"):
        raw, cfg = compose([*tiny, "model=resnet8", f"trainer.compile={flag}"])
        results[flag] = fit(cfg, load_dataset(cfg.dataset, cfg.work_dir), chash=f"compile{flag}")
    eager, compiled = results["false"], results["true"]
    assert compiled.meta["step_settings"]["train_compile"] == "true"
    assert compiled.final["train/accuracy"] == pytest.approx(
        eager.final["train/accuracy"], abs=0.02
    )
    assert compiled.final["train/loss"] == pytest.approx(eager.final["train/loss"], rel=0.2)
    assert set(load_checkpoint(compiled.checkpoint)["model"]) == set(eager.model.state_dict())
