"""Out of device memory: attacks and KDE scoring retry in halves and say so once; training stops
with a message naming ``trainer.batch_size`` (a smaller batch would change the results).

The device's memory limit is injected: an operation raises ``torch.OutOfMemoryError`` (what
CUDA raises) whenever it is asked to handle more than a set size.
"""

from __future__ import annotations

import pytest
import torch

import robustctl.defenses.kde as kde_module
from robustctl.attacks import build
from robustctl.composition import compose
from robustctl.data import load_dataset
from robustctl.defenses import KDEDetector
from robustctl.errors import TrainingOutOfMemory
from robustctl.evaluation.attack_runner import run_attack
from robustctl.losses import OPTIONS as LOSS_OPTIONS
from robustctl.losses import TrainingLoss
from robustctl.models import ResNet
from robustctl.training import fit


def oom() -> torch.OutOfMemoryError:
    return torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ResNet(depth=8, num_classes=10, in_channels=1, width=8).eval()


def test_an_attack_batch_that_runs_out_of_memory_is_retried_in_halves(model, capsys):
    """A device that holds at most 8 images: batches of 32 halve twice, once announced, and the
    outcome equals the attack run in batches of 8 from the start."""
    x, y = torch.rand(20, 1, 8, 8), torch.randint(0, 10, (20,))
    attack = build("bim-0.1", model)

    class AtMostEight(type(attack)):
        def __call__(self, xb, yb, target=None):
            if len(xb) > 8:
                raise oom()
            return super().__call__(xb, yb, target)

    capped = AtMostEight(model, attack.config)
    outcome = run_attack(capped, x, y, batch_size=32)
    reference = run_attack(build("bim-0.1", model), x, y, batch_size=8)
    assert torch.equal(outcome.x_adv, reference.x_adv)
    assert outcome.metrics == pytest.approx(reference.metrics, nan_ok=True)
    printed = capsys.readouterr().out
    assert printed.count("out of device memory") == 1 and "at size 32" in printed


def test_kde_scoring_that_runs_out_of_memory_uses_smaller_blocks(monkeypatch):
    g = torch.Generator().manual_seed(0)
    points, labels = torch.randn(300, 8, generator=g), torch.arange(3).repeat(100)
    queries, classes = torch.randn(50, 8, generator=g), torch.randint(0, 3, (50,), generator=g)
    small = KDEDetector(bandwidth=1.0, chunk_size=2**13).fit(points, labels)
    expected = small.score(queries, classes)

    real = kde_module._LogKernelSum.apply

    def limited(z, p, inv_s2, chunk_size):  # a device that holds 2**13 entries at most
        if chunk_size > 2**13:
            raise oom()
        return real(z, p, inv_s2, chunk_size)

    monkeypatch.setattr(kde_module._LogKernelSum, "apply", limited)
    detector = KDEDetector(bandwidth=1.0).fit(points, labels)  # default 2**22 entries
    assert torch.equal(detector.score(queries, classes), expected)
    assert detector.chunk_size == 2**13

    def always(*args):
        raise oom()

    monkeypatch.setattr(kde_module._LogKernelSum, "apply", always)
    with pytest.raises(torch.OutOfMemoryError):  # at the floor the error stands
        detector.score(queries, classes)
    assert detector.chunk_size == kde_module.MIN_CHUNK_SIZE


class OutOfMemoryAt(TrainingLoss):
    def forward(self, output, labels):
        raise oom()


def test_training_out_of_memory_names_the_batch_size_and_does_not_retry(tiny, monkeypatch):
    monkeypatch.setitem(LOSS_OPTIONS.implementations, "ce", lambda cfg: OutOfMemoryAt())
    _, cfg = compose(tiny)
    with pytest.raises(TrainingOutOfMemory, match=r"trainer.batch_size=32") as err:
        fit(cfg, load_dataset(cfg.dataset, cfg.work_dir), chash="oom")
    assert "lower trainer.batch_size" in str(err.value)
