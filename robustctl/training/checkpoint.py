"""Checkpoints: written atomically, loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects),
so ``torch.load(..., weights_only=True)`` reads it and refuses a file crafted to run code.
Saving writes ``<name>.tmp`` in the same folder, flushes it to disk, then renames it over the
target: a crash leaves either the old or the new checkpoint, never half of one. A write that fails
(disk full, a read-only or vanished folder) removes its partial ``.tmp`` and raises a
:class:`CheckpointError` that says the previous checkpoint is intact.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch

from robustctl.errors import CheckpointError

FORMAT = "robustctl-checkpoint/1"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (module docstring)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if path.exists() else "no checkpoint was kept"
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; {kept}",
            hint=f"free disk space or make {path.parent} writable, then resume "
            "(trainer.resume=true)",
        ) from exc
    return path


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a robustctl checkpoint safely; every failure is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist",
            hint="check the path, or train first (`robustctl train`)",
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than plain weights "
            "(unsafe to unpickle)",
            hint="only load checkpoints written by robustctl or from sources you trust",
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: {str(exc).splitlines()[0]}"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robustctl checkpoint (no '{FORMAT}' marker)")
    return state


def model_from_checkpoint(
    state: dict[str, Any], device: str | torch.device = "cpu", expect_model: str | None = None
) -> torch.nn.Module:
    """Rebuild the project model a checkpoint describes and load its weights (strictly)."""
    from robustctl.config.schema import ModelConfig
    from robustctl.errors import ConfigError
    from robustctl.models import build_model
    from robustctl.transforms import transform_from_meta

    meta = state.get("meta", {})
    try:
        model_cfg = ModelConfig(**meta["model"])
        if expect_model is not None and expect_model != model_cfg.name:
            raise CheckpointError(
                f"checkpoint holds a {model_cfg.name}, but the config asks for {expect_model}",
                hint=f"pass model={model_cfg.name}, or a checkpoint of a {expect_model}",
            )
        model = build_model(
            model_cfg,
            num_classes=meta["num_classes"],
            in_channels=meta["in_channels"],
            logit_sign=meta.get("logit_sign", 1.0),
            transform=transform_from_meta(meta.get("transform")),
        )
        model.load_state_dict(state["model"], strict=True)
    except (KeyError, TypeError, ConfigError, RuntimeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(
            f"checkpoint does not match its model description: {str(exc).splitlines()[0]}"
        ) from exc
    return model.to(device).eval()
