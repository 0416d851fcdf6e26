"""A DBI over too few test examples is reported missing with its reason, never as 0."""

from __future__ import annotations

import torch

from robustctl import metric_keys as keys
from robustctl.composition import compose
from robustctl.data.base import ImageData
from robustctl.evaluation.clean_stage import clean_stage
from tests.losses.test_embedding import tiny_model


def tiny_data(y_test: list[int]) -> ImageData:
    g = torch.Generator().manual_seed(0)
    n = len(y_test)
    return ImageData(
        "synthetic",
        torch.rand(6, 1, 6, 6, generator=g),
        torch.arange(6) % 3,
        torch.rand(3, 1, 6, 6, generator=g),
        torch.arange(3),
        torch.rand(n, 1, 6, 6, generator=g),
        torch.tensor(y_test),
        ("a", "b", "c"),
    )


def test_single_example_classes_leave_the_dbi_missing_with_a_reason(tmp_path):
    _, cfg = compose(["dataset=synthetic", f"work_dir={tmp_path}"])
    result = clean_stage(cfg, tiny_model(), tiny_data([0, 1, 2]), "ce")
    assert keys.EMBED_DBI not in result.metrics  # scikit-learn's convention would say 0.0
    reason = result.notes[keys.EMBED_DBI]
    assert "3 of 3 classes have a single test example" in reason
    assert result.tags[keys.EMBED_DBI_REASON_TAG] == reason
    assert keys.EMBED_DBI not in result.documents["metrics.json"]["metrics"]
    assert keys.CLEAN_ACCURACY in result.metrics  # the rest is still measured


def test_one_test_image_gives_no_dbi_and_no_tsne_instead_of_failing(tmp_path):
    _, cfg = compose(["dataset=synthetic", f"work_dir={tmp_path}"])
    result = clean_stage(cfg, tiny_model(), tiny_data([1]), "ce")
    assert "at least 2 classes" in result.notes[keys.EMBED_DBI]
    assert "plots/tsne.png" not in result.figures and "plots/tsne.png" in result.notes
    assert "plots/confusion_matrix.png" in result.figures
