"""What the user's Hydra overrides set, read from their text (no composition)."""

from __future__ import annotations

from collections.abc import Sequence


def override_keys(overrides: Sequence[str]) -> list[str]:
    """The config keys the overrides set: ``model=resnet32`` -> ``model``, ``+trainer.seed=3``
    -> ``trainer.seed`` (Hydra's ``+``, ``++`` and ``~`` prefixes dropped; ``hydra.*`` and
    ``hydra/...`` left out)."""
    keys = []
    for override in overrides:
        key, sep, _ = override.partition("=")
        key = key.lstrip("+~")
        if sep and key and not key.startswith("hydra"):
            keys.append(key)
    return keys
