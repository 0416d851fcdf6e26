"""The option registry every package fills: names once, refuses unknown names with the choices."""

from __future__ import annotations

import pytest
import torch

from robustctl.config.registry import OptionRegistry
from robustctl.config.validation import NoneConfig
from robustctl.errors import ConfigError
from robustctl.models import OPTIONS as MODEL_OPTIONS
from robustctl.models import EmbeddingModel, build_model


def test_an_option_is_registered_once_and_found_by_name():
    registry = OptionRegistry("demo")
    registry.add(NoneConfig(), None)
    registry.add(NoneConfig(name="other"), len)
    assert list(registry) == ["none", "other"] and len(registry) == 2
    assert registry.implementation("other") is len and registry.implementation("none") is None
    with pytest.raises(ValueError, match="registered twice"):
        registry.add(NoneConfig(name="other"), abs)
    with pytest.raises(ConfigError, match="unknown option 'x' — valid demo options: none, other"):
        registry.implementation("x")


def test_every_model_option_builds_a_model_with_the_embedding_interface():
    for name, cfg in MODEL_OPTIONS.configs().items():
        assert cfg.name == name
        model = build_model(cfg, num_classes=3, in_channels=1)
        assert isinstance(model, EmbeddingModel)
        out = model(torch.rand(2, 1, 8, 8))
        assert torch.equal(model.head(out.embedding), out.logits)
    assert not isinstance(torch.nn.Linear(2, 2), EmbeddingModel)
