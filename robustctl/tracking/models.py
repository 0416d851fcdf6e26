"""Trained networks as MLflow models: logged with each training run, optionally registered, and
loaded back by ``robustctl evaluate evaluate.model_uri=...``.

What is logged (``mlflow.pytorch``, pickle format, under the run's model named ``model``):

- the network's *prediction view* (``PredictionView``: images in [0, 1] -> prediction logits
  ``logit_sign * Z``), so ``mlflow.pytorch.load_model(uri)(x)`` predicts exactly as the run did,
  RCE-trained models included; the project model itself is its ``.model`` attribute;
- a signature and an input example (two test images) inferred from that view;
- the checkpoint's description (``meta``: architecture, dataset and its hash, loss, logit sign,
  training fingerprint) as the MLflow model's metadata under ``robustctl``, which evaluation
  needs to refuse a model of another dataset or split.

The logged model is created in the run's own experiment (MLflow's ``log_model`` would otherwise
file it under the active experiment, usually "Default") and linked to the run as its output.
With ``tracking.register_model=true`` (every ``robustctl experiment`` sets it) a version is added
to the registered model ``robustctl-<dataset>-<model>-<loss>``, tagged with the run's seed,
fingerprint and variant.

Loading a pickled model runs code from the store: load models only from stores you trust.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from robustctl.errors import TrackingError

if TYPE_CHECKING:
    import torch

    from robustctl.tracking.run import RunTracker

MODEL_NAME = "model"  # runs:/<run id>/model
METADATA_KEY = "robustctl"
URI_SCHEMES = ("models:/", "runs:/")


def registered_name(dataset: str, model: str, loss: str) -> str:
    """The Model Registry name of a trained network: ``robustctl-<dataset>-<model>-<loss>``."""
    return f"robustctl-{dataset}-{model}-{loss}"


@contextlib.contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's fluent model functions read the global tracking URI: point it at ``uri`` for the
    duration, then restore it (no run becomes active)."""
    from mlflow.tracking._tracking_service.utils import _use_tracking_uri

    with _use_tracking_uri(uri):
        yield


@contextlib.contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """MLflow warns on every pickled model; the choice is deliberate (module docstring: the
    project model must load whole, with its embedding) and documented, so the run's output stays
    readable."""
    import logging

    log = logging.getLogger("mlflow.pytorch")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        log.setLevel(level)


def _quiet_downloads() -> None:
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def has_logged_model(tracker: RunTracker) -> bool:
    """Whether the tracker's run already has a logged model (a resumed run keeps its first)."""
    run = tracker.client.get_run(tracker.run_id)
    return bool(run.outputs and run.outputs.model_outputs)


def log_model(
    tracker: RunTracker,
    model: torch.nn.Module,
    example: torch.Tensor,
    meta: dict[str, Any],
    register_as: str | None = None,
    tags: dict[str, str] | None = None,
) -> str | None:
    """Log ``model``'s prediction view to the tracker's run (see the module docstring), with
    ``tags`` on the logged model and on its registered version; returns the model URI
    (``models:/<model id>``), or None when the run is offline or already has a model."""
    import torch
    from mlflow.exceptions import MlflowException

    from robustctl.console import console
    from robustctl.tracking.fallback import server_down

    if tracker.journal is not None:  # the server is away: the checkpoint artifact still is kept
        return None
    if has_logged_model(tracker):
        return None
    view = copy.deepcopy(model).cpu().eval().prediction_view()  # loads on any machine
    example = example.detach().cpu()
    with torch.no_grad():
        logits = view(example)
    metadata = json.loads(json.dumps(meta, default=str))
    version_tags = {key: str(value) for key, value in (tags or {}).items()}
    try:
        info = _log(tracker, view, example, logits, metadata, register_as, version_tags)
    except (MlflowException, OSError):
        if not server_down(tracker.uri):
            raise
        console.print(
            f"[yellow]the trained model was not logged:[/] tracking server {tracker.uri} is "
            "unreachable; the run's checkpoint artifact keeps the weights"
        )
        return None
    return info.model_uri


def _log(
    tracker: RunTracker,
    view: torch.nn.Module,
    example: torch.Tensor,
    logits: torch.Tensor,
    metadata: dict[str, Any],
    register_as: str | None,
    tags: dict[str, str],
) -> Any:
    """The MLflow calls of :func:`log_model`: the logged model in the run's experiment, its
    files, and the registered version with ``tags``."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    logged = tracker.client.create_logged_model(
        tracker.experiment_id, name=MODEL_NAME, source_run_id=tracker.run_id, tags=tags
    )
    with _tracking_uri(tracker.uri), _quiet_pickle_warning():
        info = mlflow.pytorch.log_model(
            view,
            name=MODEL_NAME,
            model_id=logged.model_id,
            run_id=tracker.run_id,
            signature=infer_signature(example.numpy(), logits.numpy()),
            input_example=example.numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={METADATA_KEY: metadata},
            serialization_format="pickle",
            registered_model_name=register_as,
        )
    if register_as and info.registered_model_version is not None:
        for key, value in tags.items():
            tracker.client.set_model_version_tag(
                register_as, str(info.registered_model_version), key, value
            )
    return info


def load_logged_model(
    uri: str, tracking_uri: str, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], str | None]:
    """(project model on ``device`` in eval mode, its robustctl metadata, the run that logged it)
    from a ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/<model id>`` or
    ``runs:/<run id>/model`` URI."""
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import get_model_info

    from robustctl.models import PredictionView

    if not uri.startswith(URI_SCHEMES):
        raise TrackingError(
            f"evaluate.model_uri={uri!r} is not an MLflow model URI",
            hint="use models:/NAME/VERSION (the Model Registry) or runs:/RUN_ID/model",
        )
    _quiet_downloads()
    with _tracking_uri(tracking_uri):
        try:
            info = get_model_info(uri)
            loaded = mlflow.pytorch.load_model(uri, map_location=device)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot load the MLflow model {uri} from {tracking_uri}: "
                f"{str(exc.message).splitlines()[0]}",
                hint="list registered models in the UI (`robustctl ui`, Models tab)",
            ) from exc
    meta = (info.metadata or {}).get(METADATA_KEY)
    if not isinstance(loaded, PredictionView) or meta is None:
        raise TrackingError(
            f"{uri} is not a model logged by robustctl (no prediction view with robustctl "
            "metadata)",
            hint="evaluate.checkpoint=PATH evaluates a robustctl checkpoint file",
        )
    model = loaded.model.to(device).eval()
    return model, meta, info.run_id
