"""Fixtures of the attack tests: a tiny ResNet-8 trained for a few seconds on the digits data
(``tiny_digits_model`` in tests/conftest.py, trained once per session; this package gets a copy).

The model is undefended and accurate (~98% on the 8x8 digits test split), so unbounded attacks
must reach ~100% success on it and bounded ones must behave as their formulas say; a wrong
attack fails these tests. Everything runs single-threaded on the CPU (the tensors are tiny;
extra threads only add contention on a shared 2-core machine).
"""

from __future__ import annotations

import pytest
import torch

from robustctl.models import ResNet
from tests.conftest import Trained, fresh_copy


@pytest.fixture(scope="package", autouse=True)
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="package")
def trained(_single_thread, tiny_digits_model) -> Trained:
    """This package's copy of the session's tiny digits model (trained once for the whole run)."""
    return fresh_copy(tiny_digits_model)


@pytest.fixture(scope="package")
def reference(trained: Trained) -> ResNet:
    """A separately built copy of the trained model, loaded from the weights saved right after
    training and never attacked: the judge of how an adversarial batch is classified. Re-predicting
    with the attacked model is how ``Attack.__call__`` itself computes ``pred`` and ``success``, so
    it agrees with a wrong mask whenever an attack left that model changed (weights, batch-norm
    statistics, mode); this copy is out of every attack's reach."""
    twin = ResNet(depth=8, num_classes=10, in_channels=1, width=8)
    twin.load_state_dict(trained.weights)
    return twin.eval()


@pytest.fixture(scope="package")
def rce_twin(trained: Trained) -> ResNet:
    """An RCE-style copy (logit_sign = -1, head negated): same predictions, opposite raw
    logits Z."""
    twin = ResNet(depth=8, num_classes=10, in_channels=1, width=8, logit_sign=-1.0)
    state = {k: v for k, v in trained.model.state_dict().items() if k != "logit_sign"}
    twin.load_state_dict(state, strict=False)
    with torch.no_grad():
        twin.head.weight.neg_()
        twin.head.bias.neg_()
    return twin.eval()
