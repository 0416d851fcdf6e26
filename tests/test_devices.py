"""The device rule without a GPU: every stage on a second device (``tests/fake_accelerator.py``).

The rule (docs/method.md, "Devices"): the detector, the attack state and every tensor an attack
or the training step combines live on the model's device; results come back to the CPU only
where they are logged. Each test runs a piece of the pipeline with the model on the fake device,
where a tensor left on the CPU raises :class:`DeviceMismatch` as CUDA would, and checks that the
numbers equal the same computation on the CPU (the fake device computes with the same CPU
kernels, so they must agree exactly).
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from robustctl.attacks import ATTACKS, build
from robustctl.data import DatasetConfig
from robustctl.data.digits import load_digits_split
from robustctl.defenses import KDEConfig, build_detector, fit_detector
from robustctl.defenses.base import OPTIONS as DEFENSE_OPTIONS
from robustctl.inference import predict
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import PairSampler, build_loss
from robustctl.models import ResNet
from robustctl.threat_models.cw_wb import CWWhiteBox
from robustctl.training.trainer import TrainingSet, train_epoch
from tests.fake_accelerator import ACCEL, DeviceMismatch, FakeAccelerator

SMALL = {"steps": 4, "binary_steps": 2}  # budgets small enough for a test; same code paths
SMALL_QUERIES = 12  # a score-based attack's budget
# a decision-based attack needs its start and a few probes per iteration inside its budget
PER_METHOD = {"hsj": {"queries": 200, "init_evals": 4, "init_trials": 20}}


@pytest.fixture(scope="module")
def digits():
    raw = load_digits_split(DatasetConfig(), ".")
    return SimpleNamespace(
        x_train=raw.x_train[:300],
        y_train=raw.y_train[:300],
        x_val=raw.x_train[300:400],
        y_val=raw.y_train[300:400],
        x=raw.x_test[:12],
        y=raw.y_test[:12],
    )


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet(depth=8, num_classes=10, in_channels=1, width=8).eval()


def on_accel(model):
    return copy.deepcopy(model).to(ACCEL)


# ------------------------------------------------------------------------------- the harness
def test_the_harness_refuses_what_cuda_refuses():
    with FakeAccelerator() as mode:
        a = torch.ones(3).to(ACCEL)
        assert a.device == ACCEL and (a * 2).device == ACCEL
        assert (a + torch.tensor(1.0)).device == ACCEL  # a 0-dim CPU scalar may join
        assert a[torch.tensor([0, 2])].device == ACCEL  # CPU indices are copied by PyTorch
        with pytest.raises(DeviceMismatch):
            a + torch.ones(3)
        with pytest.raises(DeviceMismatch):
            torch.rand(3, device=ACCEL, generator=torch.Generator().manual_seed(0))
        torch.rand(3, device=ACCEL, generator=torch.Generator(device=ACCEL))
        assert a.sum().item() == 3.0
    assert mode.uploads == 2 and mode.host_reads == 1  # ones(3), the index; .item()


# --------------------------------------------------------------------------------- attacks
@pytest.mark.parametrize("method", sorted(set(ATTACKS) - {"cw_wb"}))
def test_every_attack_runs_on_the_models_device_and_agrees_with_the_cpu(method, model, digits):
    budgets = {**SMALL, "queries": SMALL_QUERIES, **PER_METHOD.get(method, {})}
    small = {k: v for k, v in budgets.items() if hasattr(ATTACKS[method].config_type, k)}
    cpu = build(method, model, **small)(digits.x, digits.y)
    with FakeAccelerator():
        out = build(method, on_accel(model), **small)(digits.x, digits.y)
    assert out.x_adv.device.type == "cpu"  # results come back to the caller's device
    assert torch.equal(out.x_adv, cpu.x_adv) and torch.equal(out.pred, cpu.pred)


# ---------------------------------------------------------------------------------- detector
def test_kde_fit_and_score_stay_on_the_device(model, digits):
    _, emb = predict(model, digits.x_train)
    cfg = KDEConfig(per_class=20, grid_size=5)
    cpu = build_detector(cfg, emb, digits.y_train).score(emb[:40], digits.y_train[:40])
    with FakeAccelerator():
        detector = build_detector(cfg, emb.to(ACCEL), digits.y_train.to(ACCEL))
        scores = detector.score(emb[:40].to(ACCEL), digits.y_train[:40].to(ACCEL))
        assert detector.points.device == ACCEL and scores.device == ACCEL
        assert torch.equal(scores.cpu(), cpu)


@pytest.mark.parametrize(
    ("toward", "start"),
    [("runner_up", "clean"), ("every_class", "clean"), ("every_class", "other_class")],
)
def test_cw_wb_with_a_fitted_detector_runs_on_the_device(toward, start, model, digits):
    """The bug the device rule fixed: a detector fitted on CPU embeddings beside a model on the
    GPU. ``fit_detector`` now returns it on the model's device; left on the CPU it fails here.
    ``every_class`` (one search per class, on the images of the other classes) and starts from a
    (CPU) pool of training images too."""
    from robustctl.defenses import score_images
    from robustctl.threat_models.cw_wb import StartingPool

    data = SimpleNamespace(
        x_train=digits.x_train, y_train=digits.y_train, x_val=digits.x_val, y_val=digits.y_val
    )
    cfg = KDEConfig(per_class=20, grid_size=5)
    params = {**SMALL, "toward": toward, "start": start}
    cpu_detector = fit_detector(cfg, model, data)
    pool = StartingPool(
        digits.x_train[:40], *score_images(cpu_detector, model, digits.x_train[:40])
    )
    cpu = CWWhiteBox(model, cpu_detector, pool=pool, **params)(digits.x, digits.y)
    with FakeAccelerator():
        accel = on_accel(model)
        detector = fit_detector(cfg, accel, data)
        assert detector.points.device == ACCEL
        out = CWWhiteBox(accel, detector, pool=pool, **params)(digits.x, digits.y)
        with pytest.raises(DeviceMismatch):
            CWWhiteBox(accel, detector.to("cpu"), pool=pool, **params)(digits.x, digits.y)
    assert torch.equal(out.x_adv, cpu.x_adv)


# sizes for a test, where a detector's defaults are slow; every registered detector is tested (kde
# above, with the starting pool), a new one with its defaults until it gets an entry here
SMALL_DETECTORS = {
    "bu": {"samples": 8},
    "kde_bu": {"fit_samples": 60},
    "lid": {"k": 5, "reference_size": 30, "fit_samples": 60},
    "mahalanobis": {"layers": ["stage3", "embedding"], "noise": 0.01, "fit_samples": 60},
    "combined": {"fit_samples": 60},
}


@pytest.mark.parametrize("name", sorted(set(DEFENSE_OPTIONS) - {"none", "kde"}))
def test_every_detector_fits_scores_and_is_attacked_on_the_device(name, model, digits):
    """Each detector fitted (on adversarial examples too, where it learns from them) and attacked
    by C&W-wb with the model on the device: no tensor left behind, the CPU's numbers."""
    from robustctl.data.base import ImageData
    from robustctl.defenses import score_images
    from robustctl.threat_models.context import crafter

    data = ImageData(
        "digits",
        digits.x_train,
        digits.y_train,
        digits.x_val,
        digits.y_val,
        digits.x,
        digits.y,
        tuple(str(d) for d in range(10)),
    )
    cfg = DEFENSE_OPTIONS.implementation(name).config_type(**SMALL_DETECTORS.get(name, {}))

    def evaluate(net):
        detector = fit_detector(cfg, net, data, 64, craft=crafter(net, 64))
        _, scores = score_images(detector, net, digits.x, 64)
        return detector, scores, CWWhiteBox(net, detector, **SMALL)(digits.x, digits.y)

    _, cpu_scores, cpu = evaluate(model)
    with FakeAccelerator():
        accel = on_accel(model)
        detector, scores, out = evaluate(accel)
        assert all(b.device == ACCEL for b in detector.buffers())
    torch.testing.assert_close(scores, cpu_scores, rtol=0, atol=0)
    assert torch.equal(out.x_adv, cpu.x_adv)


# ---------------------------------------------------------------------------------- training
def one_epoch(model, device, digits, mode=None):
    """One PDM epoch with augmentation (every random draw of the step) on ``device``; returns
    (stats, weights on the CPU, (uploads, host reads) during the epoch when ``mode`` is given)."""
    trainer = SimpleNamespace(
        lr=0.05,
        batch_size=64,
        max_batches=None,
        schedule="constant",
        warmup_epochs=0,
        epochs=1,
        milestones=[],
        gamma=0.1,
        precision="fp32",
        channels_last=None,
        compile=False,
    )
    loss_fn = build_loss(LOSS_OPTIONS.configs()["pdm"]).to(device)
    model = copy.deepcopy(model).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    train = TrainingSet(digits.x_train.to(device), digits.y_train.to(device), augment=True)
    sampler = PairSampler(digits.y_train, q=0.5).to(device)
    generator = torch.Generator(device=device).manual_seed(0)
    before = (mode.uploads, mode.host_reads) if mode else (0, 0)
    stats = train_epoch(
        model,
        loss_fn,
        optimizer,
        train,
        generator,
        cfg=SimpleNamespace(trainer=trainer),
        epoch=0,
        step0=0,
        total_steps=5,
        device=device,
        pair_sampler=sampler,
    )
    traffic = (mode.uploads - before[0], mode.host_reads - before[1]) if mode else (0, 0)
    return stats, {k: v.cpu() for k, v in model.state_dict().items()}, traffic


def test_a_training_epoch_stays_on_the_device_without_host_syncs(model, digits):
    """Shuffling, augmentation, Siamese partners and statistics all stay on the device: nothing
    is uploaded during the epoch's 5 steps, and the host reads the device twice (the divergence
    check and the epoch's statistics), not once per step. Same numbers as the CPU epoch."""
    cpu_stats, cpu_weights, _ = one_epoch(model, torch.device("cpu"), digits)
    with FakeAccelerator() as mode:
        stats, weights, (uploads, reads) = one_epoch(model, ACCEL, digits, mode)
    assert (uploads, reads) == (0, 2)
    assert stats == cpu_stats
    assert all(torch.equal(weights[k], cpu_weights[k]) for k in cpu_weights)


# ------------------------------------------------------------ transforms, adversarial training
@pytest.mark.parametrize("name", ["jpeg", "bit_depth", "median", "lowpass", "edges"])
def test_every_input_transform_runs_on_the_device_and_agrees_with_the_cpu(name, model, digits):
    """The transform inside the model (forward and BPDA/exact backward) on the device: no tensor
    of its own (DCT matrix, quantization tables, DFT mask, Sobel kernels, reflect indices) stays
    on the CPU; same values and input gradients as on the CPU."""
    from robustctl.transforms import build_transform, transform_configs

    def value_and_grad(device):
        m = copy.deepcopy(model)
        m.input_transform = build_transform(transform_configs()[name])
        m = m.to(device)
        x = digits.x.to(device).requires_grad_()
        logits = m.predict_logits(x)
        (grad,) = torch.autograd.grad(logits.logsumexp(1).sum(), x)
        return logits.detach().cpu(), grad.cpu()

    cpu = value_and_grad(torch.device("cpu"))
    with FakeAccelerator():
        accel = value_and_grad(ACCEL)
    torch.testing.assert_close(accel, cpu)


def test_an_adversarial_training_epoch_stays_on_the_device(model, digits):
    """PGD training behind JPEG: crafting (random start from a generator on the device, BPDA)
    and the step on the device, with the numbers of the CPU epoch."""
    from robustctl.train_defenses import build_train_defense, train_defense_configs
    from robustctl.transforms import JPEG

    def run(device):
        m = copy.deepcopy(model)
        m.input_transform = JPEG(quality=50)
        m = m.to(device).train()
        defense = build_train_defense(train_defense_configs()["pgd_at"])
        adversary = defense.for_epoch(m, seed=0, epoch=0)
        x, y = digits.x_train[:32].to(device), digits.y_train[:32].to(device)
        return adversary(x, y).cpu()

    cpu = run(torch.device("cpu"))
    with FakeAccelerator():
        accel = run(ACCEL)
    assert torch.equal(accel, cpu) and not torch.equal(cpu, digits.x_train[:32])
