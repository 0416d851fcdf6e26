"""Checkpoints: one slot per training config, held by one run at a time, written atomically, and
loaded with ``weights_only=True``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts (no pickled objects),
so ``torch.load(..., weights_only=True)`` reads it and refuses a file crafted to run code; a file
that is not a checkpoint at all (empty, truncated, garbage) is called corrupt, not unsafe.

Saving writes a temporary file with a unique name (``last.pt.<random>.tmp``) in the same folder,
flushes it to disk, then renames it over the target: a crash leaves either the old or the new
checkpoint, never half of one. A write that fails (disk full, a read-only folder, a file where
the folder should be) removes its temporary file and raises a :class:`CheckpointError` that says
whether the previous checkpoint is intact and what to fix.

:func:`checkpoint_slot` gives a training run the slot (the config's checkpoint folder) for as long
as it trains: an exclusive ``flock`` on ``<slot>/slot.lock``, which the kernel releases when the
process ends however it ends. A second run of the same config in the same ``work_dir`` started
meanwhile is refused with one line (:class:`CheckpointSlotBusy`), so two runs never write, or
resume from, each other's weights.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import pickle
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from robustctl.errors import CheckpointError

FORMAT = "robustctl-checkpoint/1"
SLOT_LOCK = "slot.lock"  # in a checkpoint's folder: the pid of the run training into it


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically (module docstring)."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".tmp")
        tmp = Path(name)
        with os.fdopen(handle, "wb") as fh:
            torch.save({"format": FORMAT, **state}, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        kept = "the previous checkpoint is intact" if _is_file(path) else "no checkpoint was kept"
        raise CheckpointError(
            f"could not write checkpoint {path}: {exc.strerror or exc}; {kept}",
            hint=f"{_write_fix(exc, path.parent)}, then resume (trainer.resume=true)",
        ) from exc
    return path


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:
        return False


def _write_fix(error: OSError, folder: Path) -> str:
    """What to do about a failed write into ``folder``, by its cause."""
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"free disk space on the disk of {folder}"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"make {folder} writable"
    if error.errno in (errno.ENOTDIR, errno.EEXIST):
        blocking = next((p for p in (folder, *folder.parents) if _is_file(p)), folder)
        return (
            f"{blocking} is a file where a folder should be: move it away, or set "
            "trainer.checkpoint_dir (or work_dir) elsewhere"
        )
    return f"check that {folder} can be written"


class CheckpointSlotBusy(CheckpointError):
    """Another run of the same training config holds its checkpoint slot."""


@contextlib.contextmanager
def checkpoint_slot(path: str | Path) -> Iterator[Path]:
    """Hold the slot of checkpoint ``path`` (its folder) while the block runs (module docstring);
    :class:`CheckpointSlotBusy` when another process holds it."""
    folder = Path(path).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = open(folder / SLOT_LOCK, "a+")  # noqa: SIM115 - held open for the whole block
    except OSError as exc:
        raise CheckpointError(
            f"could not create the checkpoint folder {folder}: {exc.strerror or exc}",
            hint=_write_fix(exc, folder),
        ) from exc
    with lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise CheckpointSlotBusy(
                f"another run of this training config is training into {folder} "
                f"(process {holder}); two runs of one config never share a checkpoint",
                hint="wait for it to finish (then trainer.resume=true continues from it), or "
                "give this run its own work_dir=... or trainer.checkpoint_dir=...",
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        try:
            yield folder
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a robustctl checkpoint safely; every failure is a :class:`CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint {path} does not exist",
            hint="check the path, or train first (`robustctl train`)",
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): truncated or corrupt")
    if not zipfile.is_zipfile(path):  # torch.save writes a zip archive since torch 1.6
        raise CheckpointError(
            f"checkpoint {path} is truncated or corrupt: not the zip archive torch.save writes"
        )
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"refusing to load {path}: it holds objects other than plain weights "
            "(unsafe to unpickle)",
            hint="only load checkpoints written by robustctl or from sources you trust",
        ) from exc
    except Exception as exc:  # noqa: BLE001 - whatever a damaged archive makes torch raise
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"checkpoint {path} is truncated or corrupt: {detail}") from exc
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robustctl checkpoint (no '{FORMAT}' marker)")
    return state


def model_from_checkpoint(
    state: dict[str, Any], device: str | torch.device = "cpu", expect_model: str | None = None
) -> torch.nn.Module:
    """Rebuild the project model a checkpoint describes and load its weights (strictly)."""
    from robustctl.errors import ConfigError
    from robustctl.models import build_model, model_config
    from robustctl.transforms import transform_from_meta

    meta = state.get("meta", {})
    try:
        model_cfg = model_config(**meta["model"])
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
