"""``robustctl evaluate``'s config, made to agree with the checkpoint it loads.

A checkpoint records what trained it (``meta["training_config"]``: the model, loss, transform,
train_defense and trainer groups as dicts; older checkpoints: the model, the loss and transform
names). ``evaluate`` composes its own config from the defaults and the user's overrides, so
without care its run would say ``model resnet56; epochs 30`` for a 2-epoch ResNet-20 and split
the report's columns. Here:

1. :func:`refuse_contradictions`: an override the user *wrote* (``model=resnet32``,
   ``loss=rce``, ``transform=jpeg``, ``model.width=32``, ``trainer.epochs=5``, ...) that differs
   from the checkpoint is refused (exit 2, naming both values). Defaults that differ are not
   contradictions: they are replaced.
2. :func:`adopt_training_config`: the config is composed again with the checkpoint's options
   and values for those groups, keeping the user's machine settings (``trainer.device``,
   ``trainer.num_threads``, batch sizes, precision), so the run's params, name, tags and every
   stage that reads the model config (the black-box proxy copies the target's width and norm)
   describe the model that is evaluated.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from robustctl.config.overrides import override_keys
from robustctl.config.schema import RunConfig
from robustctl.errors import ConfigError
from robustctl.training.trainer import TRAINING_CONFIG_KEY, TRAINING_GROUPS

# trainer keys that say how or where a model runs, not what was trained: evaluate keeps its own
MACHINE_KEYS = (
    "device",
    "num_threads",
    "eval_batch_size",
    "precision",
    "channels_last",
    "compile",
    "resume",
    "checkpoint_dir",
)


def checkpoint_training(meta: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The checkpoint's training groups as dicts; for checkpoints written before
    ``training_config`` existed, what their ``meta`` holds (model; loss, transform and
    train_defense by name only; no trainer)."""
    recorded = meta.get(TRAINING_CONFIG_KEY)
    if recorded:
        return {group: dict(recorded[group]) for group in TRAINING_GROUPS if group in recorded}
    legacy: dict[str, dict[str, Any]] = {}
    if "model" in meta:
        legacy["model"] = dict(meta["model"])
    if meta.get("loss"):
        legacy["loss"] = {"name": meta["loss"]}
    legacy["transform"] = dict(meta.get("transform") or {"name": "none"})
    legacy["train_defense"] = {"name": meta.get("train_defense") or "none"}
    return legacy


def _lookup(tree: dict[str, Any], dotted: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _same(a: Any, b: Any) -> bool:
    """Equal as config values (``8 == 8.0``; lists and tuples alike)."""
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def refuse_contradictions(
    container: dict[str, Any],
    training: dict[str, dict[str, Any]],
    overrides: Sequence[str],
    where: str,
) -> None:
    """Raise a :class:`ConfigError` for the first override the user wrote that sets a training
    group or key (``container``: evaluate's composed config) to something other than what the
    checkpoint ``where`` was trained with."""
    for key in override_keys(overrides):
        group, _, rest = key.partition(".")
        if group not in training or (group == "trainer" and rest.split(".")[0] in MACHINE_KEYS):
            continue
        dotted = f"{group}.name" if not rest else key
        known, trained = _lookup(training, dotted)
        if not known:  # an older checkpoint that did not record this key
            continue
        _, asked = _lookup(container, dotted)
        if not _same(asked, trained):
            raise ConfigError(
                f"{where} was trained with {dotted}={trained}, but the overrides ask for "
                f"{dotted}={asked}",
                hint=f"drop the {key} override (evaluate uses the checkpoint's training "
                "settings), or evaluate a checkpoint trained with it",
            )


def checkpoint_overrides(training: dict[str, dict[str, Any]]) -> list[str]:
    """``group=option`` overrides selecting the checkpoint's option in each training group
    that has one (the trainer has a single schema)."""
    return [
        f"{group}={training[group]['name']}"
        for group in TRAINING_GROUPS
        if group in training and "name" in training[group]
    ]


def adopt_training_config(
    cfg: RunConfig, overrides: Sequence[str], training: dict[str, dict[str, Any]]
) -> tuple[Any, RunConfig]:
    """(raw, typed) config of ``evaluate``: the user's overrides, then the checkpoint's option
    and values in every training group, the trainer's machine settings kept from ``cfg``."""
    from omegaconf import OmegaConf, open_dict

    from robustctl.composition import compose_raw, validate

    raw = compose_raw([*overrides, *checkpoint_overrides(training)])
    with open_dict(raw):
        for group, values in training.items():
            if group == "trainer":
                values = {k: v for k, v in values.items() if k not in MACHINE_KEYS}
            raw[group] = OmegaConf.merge(raw[group], values)
        raw.work_dir = cfg.work_dir  # already resolved against the right folder
    adopted = validate(raw)
    return raw, dataclasses.replace(adopted, debug=cfg.debug)
