"""The evaluation tests attack the same tiny trained ResNet-8 as the attack tests."""

import pytest
import torch

from tests.attacks.conftest import train_tiny


@pytest.fixture(scope="package")
def trained():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield train_tiny()
    finally:
        torch.set_num_threads(threads)
