"""The paper's numbers (PDM Tables 1-4) are complete, keyed by our metric names, in our units."""

from __future__ import annotations

import pytest

from robustctl.reporting.reference import PAPER_ATTACKS, REFERENCE, reference


@pytest.mark.parametrize(
    "dataset, loss, key, value",
    [
        ("cifar10", "ce", "clean/accuracy", 0.9362),
        ("cifar10", "siamese_rvl", "clean/accuracy", 0.9437),
        ("mnist", "pdm", "clean/accuracy", 0.9952),
        ("mnist", "rce", "clean/accuracy", 0.9932),
        ("mnist", "ce", "graybox/fgsm-0.05/auc", 0.981),
        ("mnist", "rce", "graybox/bim-0.1/auc", 0.92),
        ("mnist", "pdm", "graybox/cw_hc/auc", 1.0),
        ("cifar10", "ce", "graybox/cw_hc/auc", 0.637),
        ("cifar10", "pdm", "graybox/bim-0.05/auc", 0.95),
        ("cifar10", "rce", "graybox/jsma/auc", 0.96),
        ("mnist", "pdm", "whitebox/cw_wb/distortion", 0.162),
        ("cifar10", "ce", "whitebox/cw_wb/distortion", 0.008),
        ("mnist", "ce", "blackbox/cw_wb/auc", 0.88),
        ("cifar10", "pdm", "blackbox/cw_wb/auc", 0.952),
        ("cifar10", "siamese_rvl", "embed/dbi", 0.23),
    ],
)
def test_spot_values(dataset, loss, key, value):
    assert reference(dataset, loss, key) == value


def test_every_table_cell_of_the_paper_is_present_and_nothing_else():
    for dataset in ("mnist", "cifar10"):
        for loss in ("ce", "rce", "siamese_rvl", "pdm"):
            assert reference(dataset, loss, "clean/accuracy") is not None
        for loss in ("ce", "rce", "pdm"):
            for attack in PAPER_ATTACKS:
                assert reference(dataset, loss, f"graybox/{attack}/auc") is not None
            assert reference(dataset, loss, "whitebox/cw_wb/distortion") is not None
            assert reference(dataset, loss, "blackbox/cw_wb/auc") is not None
        # the paper has no Siamese+RVL column in Tables 2-4
        assert reference(dataset, "siamese_rvl", "graybox/fgsm-0.05/auc") is None
    assert len(REFERENCE) == 2 * 4 + 2 * 3 * 7 + 2 * 3 + 2 * 3 + 1
    assert {d for d, _, _ in REFERENCE} == {"mnist", "cifar10"}
    assert reference("fashion_mnist", "ce", "clean/accuracy") is None
    assert all(0.0 <= v <= 1.0 for v in REFERENCE.values())  # fractions, not the paper's percents
