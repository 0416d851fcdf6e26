"""Trained networks as MLflow models: logged with each training run, optionally registered, and
loaded back by ``robustctl evaluate evaluate.model_uri=...``.

What is logged (``mlflow.pytorch`` files, pickle format, as the run's logged model ``model``):

- the network's *prediction view* (``PredictionView``: images in [0, 1] -> prediction logits
  ``logit_sign * Z``), so ``mlflow.pytorch.load_model(uri)(x)`` predicts exactly as the run did,
  RCE-trained models included; the project model itself is its ``.model`` attribute;
- a signature and an input example (two test images) inferred from that view;
- the checkpoint's description (``meta``: architecture, dataset and its hash, loss, logit sign,
  training fingerprint) as the MLflow model's metadata under ``robustctl``, which evaluation
  needs to refuse a model of another dataset or split.

Everything goes through an ``MlflowClient`` bound to the run's own store: the model files are
written locally (:func:`save_model_files`), then
:func:`~robustctl.tracking.model_upload.upload_model` creates the logged model in the run's
experiment, uploads the files, links the model to the run as its output and, with
``tracking.register_model=true`` (every ``robustctl experiment`` sets it), adds a version to the
registered model ``robustctl-<dataset>-<model>-<loss>`` tagged with the run's seed, fingerprint
and variant. No MLflow call here reads or sets MLflow's process-wide tracking URI (nor
``$MLFLOW_TRACKING_URI``), so a sweep's later jobs log where its first did.

While the tracking server is unreachable the files are kept in the run's journal and uploaded by
``robustctl sync`` (:mod:`robustctl.tracking.fallback`), like every other write.

Loading a pickled model runs code from the store: load models only from stores you trust.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustctl.console import quiet_loggers
from robustctl.errors import TrackingError
from robustctl.tracking.fallback import LOG_MODEL_OP
from robustctl.tracking.model_upload import MODEL_NAME, upload_model

__all__ = ["load_logged_model", "log_model", "registered_name", "upload_model"]

if TYPE_CHECKING:
    import torch

    from robustctl.tracking.run import RunTracker

METADATA_KEY = "robustctl"
URI_SCHEMES = ("models:/", "runs:/")


def registered_name(dataset: str, model: str, loss: str) -> str:
    """The Model Registry name of a trained network: ``robustctl-<dataset>-<model>-<loss>``."""
    return f"robustctl-{dataset}-{model}-{loss}"


@contextlib.contextmanager
def quiet_downloads() -> Iterator[None]:
    """No per-file progress bar while a model downloads, unless the user asked for one; the
    variable is restored exactly afterwards (unset stays unset)."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    before = os.environ.get(name)
    if before is None:
        os.environ[name] = "false"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)


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
    (``models:/<model id>``), or None when the run already has a model or the server is away
    (the files then wait in the run's journal for ``robustctl sync``)."""

    if tracker.journal is None and has_logged_model(tracker):
        return None
    view = copy.deepcopy(model).cpu().eval().prediction_view()  # loads on any machine
    example = example.detach().cpu()
    metadata = json.loads(json.dumps(meta, default=str))
    with tempfile.TemporaryDirectory(prefix="robustctl-model-") as tmp:
        files = save_model_files(view, example, metadata, Path(tmp, MODEL_NAME))
        tracker.write(
            LOG_MODEL_OP,
            local_path=str(files),
            register_as=register_as,
            tags={key: str(value) for key, value in (tags or {}).items()},
        )
    if tracker.journal is not None:
        return None
    outputs = tracker.client.get_run(tracker.run_id).outputs
    return f"models:/{outputs.model_outputs[-1].model_id}"


def save_model_files(
    view: torch.nn.Module, example: torch.Tensor, metadata: dict[str, Any], path: Path
) -> Path:
    """Write the MLflow model files of ``view`` to the folder ``path`` (not yet tied to a run
    or a logged model: :func:`upload_model` adds those ids)."""
    import mlflow.pytorch
    import torch
    from mlflow.models import infer_signature

    with torch.no_grad():
        logits = view(example)
    # MLflow warns on every pickled model; the choice is deliberate (the project model must load
    # whole, with its embedding) and documented, so the run's output stays readable
    with quiet_loggers(logging.ERROR, "mlflow.pytorch"):
        mlflow.pytorch.save_model(
            view,
            str(path),
            signature=infer_signature(example.numpy(), logits.numpy()),
            input_example=example.numpy(),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
            metadata={METADATA_KEY: metadata},
            serialization_format="pickle",
        )
    return path


def model_location(client: Any, uri: str) -> str:
    """Where the files of the model ``uri`` are stored (an artifact URI), resolved by
    ``client``: ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/<model id>`` or
    ``runs:/<run id>/model``."""
    if uri.startswith("runs:/"):
        run_id, _, name = uri[len("runs:/") :].partition("/")
        outputs = client.get_run(run_id).outputs
        for output in outputs.model_outputs if outputs else []:
            logged = client.get_logged_model(output.model_id)
            if logged.name == (name or MODEL_NAME):
                return logged.artifact_location
        raise TrackingError(f"run {run_id} has no logged model named {name or MODEL_NAME!r}")
    rest = uri[len("models:/") :]
    if "@" in rest:
        name, alias = rest.split("@", 1)
        version = client.get_model_version_by_alias(name, alias).version
        return client.get_model_version_download_uri(name, version)
    if "/" in rest:
        name, version = rest.split("/", 1)
        return client.get_model_version_download_uri(name, version)
    return client.get_logged_model(rest).artifact_location


def load_logged_model(
    uri: str, tracking_uri: str, device: str | torch.device = "cpu"
) -> tuple[torch.nn.Module, dict[str, Any], str | None]:
    """(project model on ``device`` in eval mode, its robustctl metadata, the run that logged it)
    from a ``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``models:/<model id>`` or
    ``runs:/<run id>/model`` URI in the store ``tracking_uri``."""
    import mlflow.artifacts
    import mlflow.pytorch
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model
    from mlflow.tracking import MlflowClient

    from robustctl.models import PredictionView

    if not uri.startswith(URI_SCHEMES):
        raise TrackingError(
            f"evaluate.model_uri={uri!r} is not an MLflow model URI",
            hint="use models:/NAME/VERSION (the Model Registry) or runs:/RUN_ID/model",
        )
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    with tempfile.TemporaryDirectory(prefix="robustctl-model-") as tmp, quiet_downloads():
        try:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model_location(client, uri),
                dst_path=tmp,
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
            info = Model.load(local)
            loaded = mlflow.pytorch.load_model(local, map_location=device)
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
