"""Where runs go: the MLflow tracking URI and artifact location, resolved once per launch.

Default: ``sqlite:///<work_dir>/mlruns.db`` with artifacts in ``<work_dir>/mlartifacts``, both
absolute, so Hydra's per-job output folders and parallel launchers all write to one store.
``tracking.uri`` or ``$MLFLOW_TRACKING_URI`` replace it (a server URI such as
``http://127.0.0.1:5000``, whose reachability is checked before any work starts).

A new SQLite store gets its tables from MLflow on first use. Processes that start together in a
fresh folder would all try to create them (the losers fail with ``table ... already exists`` or
an alembic migration error), so :func:`open_client` creates them once, under an exclusive lock on
``<database>.lock`` beside the database file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from robustctl.config.schema import TrackingConfig
from robustctl.console import quiet_loggers
from robustctl.errors import TrackingError

DB_NAME = "mlruns.db"
ARTIFACT_DIR = "mlartifacts"


def resolve_tracking_uri(cfg: TrackingConfig, work_dir: str | Path) -> str:
    """The store's URI: ``tracking.uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite default
    (module docstring); a relative SQLite path resolves against ``work_dir``. A plain folder or a
    ``file:`` URI names MLflow's file store, which MLflow 3 refuses (unless
    ``MLFLOW_ALLOW_FILE_STORE=true``): then a :class:`~robustctl.errors.TrackingError` whose hint
    gives the SQLite URI of that folder, before any work starts."""
    from urllib.parse import urlparse

    env = os.environ.get("MLFLOW_TRACKING_URI")
    uri = cfg.uri or env or f"sqlite:///{Path(work_dir).resolve() / DB_NAME}"
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        # relative SQLite paths resolve against work_dir, not against a job's output folder
        path = Path(uri[len("sqlite:///") :])
        if not path.is_absolute():
            uri = f"sqlite:///{(Path(work_dir) / path).resolve()}"
    elif "://" not in uri or uri.startswith("file:"):  # a folder: MLflow's file store
        folder = (
            Path(work_dir) / (urlparse(uri).path if uri.startswith("file:") else uri)
        ).resolve()
        try:
            from mlflow.environment_variables import MLFLOW_ALLOW_FILE_STORE

            refused = not MLFLOW_ALLOW_FILE_STORE.get()
        except ImportError:  # an MLflow 2, whose file store still works
            refused = False
        if refused:
            source = "tracking.uri" if cfg.uri else "MLFLOW_TRACKING_URI"
            raise TrackingError(
                f"{source}={uri} is a folder (MLflow's file store), which MLflow 3 refuses",
                hint=f"use a SQLite store there: tracking.uri=sqlite:///{folder}/{DB_NAME}, "
                "or a server: tracking.uri=http://HOST:5000",
            )
        uri = uri if uri.startswith("file:") else str(folder)
    return uri


_PREPARED: set[str] = set()  # SQLite stores whose tables this process has checked


def prepare_store(uri: str) -> None:
    """Make sure a SQLite store's tables exist, creating them under the store's lock (module
    docstring); other stores need nothing."""
    if not uri.startswith("sqlite:///") or uri in _PREPARED:
        return
    import fcntl

    from mlflow.tracking import MlflowClient

    database = Path(uri[len("sqlite:///") :])
    database.parent.mkdir(parents=True, exist_ok=True)
    # MLflow and alembic announce every table they create or upgrade at INFO level: routine for
    # a new store, so kept out of the command's output (warnings still show)
    schema_logs = quiet_loggers(logging.WARNING, "mlflow.store.db.utils", "alembic")
    with open(database.with_name(database.name + ".lock"), "a") as lock, schema_logs:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        MlflowClient(uri).search_experiments(max_results=1)  # creates or upgrades the tables
        MlflowClient(uri, registry_uri=uri).search_registered_models(max_results=1)
    _PREPARED.add(uri)


def open_client(uri: str) -> Any:
    """An ``MlflowClient`` on ``uri`` (tracking and model registry), its tables ready."""
    from mlflow.tracking import MlflowClient

    prepare_store(uri)
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


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
