"""The evaluation tests attack the same tiny trained ResNet-8 as the attack tests: the session's
``tiny_digits_model`` (tests/conftest.py), trained once for the whole run."""

import pytest

from tests.conftest import Trained, fresh_copy


@pytest.fixture(scope="package")
def trained(tiny_digits_model) -> Trained:
    """This package's copy of the session's tiny digits model."""
    return fresh_copy(tiny_digits_model)
