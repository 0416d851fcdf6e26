"""MLflow tracking: store resolution, provenance, and the run wrapper (mlflow is imported
lazily)."""

from robustctl.tracking.provenance import config_hash, flatten, git_state, package_versions
from robustctl.tracking.run import RunTracker
from robustctl.tracking.store import (
    check_reachable,
    resolve_artifact_location,
    resolve_tracking_uri,
)

__all__ = [
    "RunTracker",
    "check_reachable",
    "config_hash",
    "flatten",
    "git_state",
    "package_versions",
    "resolve_artifact_location",
    "resolve_tracking_uri",
]
