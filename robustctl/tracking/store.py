"""Where runs go: the MLflow tracking URI and artifact location, resolved once per launch.

Default: ``sqlite:///<work_dir>/mlruns.db`` with artifacts in ``<work_dir>/mlartifacts``, both
absolute, so Hydra's per-job output folders and parallel launchers all write to one store.
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` replace it (a server URI such as
``http://127.0.0.1:5000``, whose reachability is checked before any work starts).
"""

from __future__ import annotations

import os
from pathlib import Path

from robustctl.config.schema import TrackingConfig
from robustctl.errors import TrackingError

DB_NAME = "mlruns.db"
ARTIFACT_DIR = "mlartifacts"


def resolve_tracking_uri(cfg: TrackingConfig, work_dir: str | Path) -> str:
    uri = (
        cfg.uri
        or os.environ.get("MLFLOW_TRACKING_URI")
        or f"sqlite:///{Path(work_dir).resolve() / DB_NAME}"
    )
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative SQLite paths resolve against work_dir, not against a job's output folder
        path = Path(uri[len("sqlite:///") :])
        if not path.is_absolute():
            uri = f"sqlite:///{(Path(work_dir) / path).resolve()}"
    elif "://" not in uri:  # a plain folder: MLflow's file store
        uri = str((Path(work_dir) / uri).resolve())
    return uri


def resolve_artifact_location(cfg: TrackingConfig, uri: str, work_dir: str | Path) -> str | None:
    """Artifact root for new experiments; None lets a tracking server choose."""
    if cfg.artifact_location:
        loc = cfg.artifact_location
        return loc if "://" in loc else Path(work_dir, loc).resolve().as_uri()
    if uri.startswith("sqlite:///"):
        return (Path(uri[len("sqlite:///") :]).parent / ARTIFACT_DIR).resolve().as_uri()
    return None


def check_reachable(uri: str, timeout: float = 5.0) -> None:
    """Fail fast (instead of MLflow's minutes of retries) when a server URI does not answer."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as resp:
            if resp.status != 200:
                raise TrackingError(f"MLflow server {uri} answered /health with HTTP {resp.status}")
    except (urllib.error.URLError, OSError) as exc:
        raise TrackingError(
            f"MLflow server {uri} is unreachable ({getattr(exc, 'reason', exc)})",
            hint=(
                "start it (`mlflow server --host 127.0.0.1 --port 5000`), "
                "or drop tracking.uri / MLFLOW_TRACKING_URI to use the local SQLite store"
            ),
        ) from exc
