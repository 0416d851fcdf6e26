"""The ``defense`` group: kde.yaml composes, invalid values name their key, build_detector fits."""

from __future__ import annotations

import pytest
import torch

from robustctl.composition import compose
from robustctl.defenses import OPTIONS, KDEConfig, KDEDetector, build_detector
from robustctl.errors import ConfigError
from robustctl.options import group_configs


def test_kde_yaml_composes_with_the_paper_default() -> None:
    _, cfg = compose(["defense=kde"])
    assert isinstance(cfg.defense, KDEConfig)
    assert cfg.defense.per_class == 1000 and cfg.defense.bandwidth == "auto"
    _, cfg = compose(["defense=kde", "defense.bandwidth=2", "defense.per_class=5"])
    assert cfg.defense.bandwidth == 2.0 and isinstance(cfg.defense.bandwidth, float)


@pytest.mark.parametrize(
    "override, key",
    [
        ("defense.per_class=0", "defense.per_class"),
        ("defense.per_class=-3", "defense.per_class"),
        ("defense.bandwidth=0", "defense.bandwidth"),
        ("defense.bandwidth=-0.5", "defense.bandwidth"),
        ("defense.bandwidth=scott", "defense.bandwidth"),
        ("defense.grid_min=0", "defense.grid_min"),
        ("defense.grid_size=1", "defense.grid_size"),
        ("defense.holdout_fraction=1.0", "defense.holdout_fraction"),
        ("defense.chunk_size=0", "defense.chunk_size"),
        ("defense.bandwidth_grid=[1.0,-2.0]", "defense.bandwidth_grid"),
    ],
)
def test_out_of_range_values_name_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        compose(["defense=kde", override])


def test_schema_direct_construction() -> None:
    with pytest.raises(ConfigError, match=r"defense\.per_class"):
        KDEConfig(per_class=0)
    with pytest.raises(ConfigError, match=r"defense\.bandwidth"):
        KDEConfig(bandwidth=0.0)
    with pytest.raises(ConfigError, match=r"defense\.bandwidth"):
        KDEConfig(bandwidth=True)
    assert KDEConfig(bandwidth="0.5").bandwidth == 0.5
    assert KDEConfig(bandwidth=3).bandwidth == 3.0


def test_registries_agree() -> None:
    detectors = {"kde", "bu", "kde_bu", "lid", "mahalanobis", "feature_squeezing", "combined"}
    assert set(group_configs()["defense"]) == set(OPTIONS) == {"none", *detectors}
    assert OPTIONS.implementation("kde") is KDEDetector and OPTIONS.implementation("none") is None
    for name in detectors:  # each option composes, its config names it, and its class takes it
        _, cfg = compose([f"defense={name}"])
        assert cfg.defense.name == name
        assert isinstance(cfg.defense, OPTIONS.implementation(name).config_type)


def test_build_detector_from_the_composed_config() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(90, 6, generator=g)
    y = torch.arange(3).repeat(30)
    _, cfg = compose(["defense=kde", "defense.per_class=12", "defense.bandwidth=1.5"])
    det = build_detector(cfg.defense, z, y)
    assert isinstance(det, KDEDetector)
    assert det.counts.tolist() == [12, 12, 12] and det.bandwidth_ == 1.5
    again = build_detector(cfg.defense, z, y)  # seeded by defense.seed
    assert torch.equal(again.points, det.points)
    _, cfg = compose(["defense=kde", "defense.per_class=12", "defense.seed=1"])
    other = build_detector(cfg.defense, z, y)
    assert (
        not torch.equal(other.points, det.points) and other.bandwidth_grid_
    )  # auto: a grid was searched
    _, cfg = compose(["defense=none"])
    assert build_detector(cfg.defense, z, y) is None  # defense=none
