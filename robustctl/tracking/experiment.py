"""The MLflow experiment runs go to: created (or found) once per tracker, and marked as model
training so that MLflow's UI shows it with the runs table rather than its GenAI overview.

Two marks, because MLflow 3 builds differ in which they read:

- the experiment tag ``mlflow.experimentKind=custom_model_development``, set on every experiment
  ``robustctl`` creates or writes to (a kind a user set by hand is kept);
- the UI's ``workflowType=machine_learning`` URL parameter, in the runs-view address
  :func:`runs_view_url` gives (``robustctl ui`` prints it). MLflow 3.17's UI ignores the tag and
  opens ``#/experiments/<id>`` on the GenAI overview; this address opens the runs table with the
  model-training sidebar (Runs, Models) whatever the UI last remembered.
"""

from __future__ import annotations

from typing import Any

EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"


def open_experiment(client: Any, name: str, artifact_location: str | None = None) -> str:
    """The id of experiment ``name`` in ``client``'s store, created when missing; either way it
    ends up with the model-training kind tag."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(
                name,
                artifact_location=artifact_location,
                tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND},
            )
        except MlflowException:  # created meanwhile by a parallel job
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    return _with_kind(client, found)


def _with_kind(client: Any, found: Any) -> str:
    """Tag an experiment created by an older robustctl (or by hand) as model training, unless it
    has a kind already; returns its id."""
    if EXPERIMENT_KIND_TAG not in found.tags:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
    return found.experiment_id


def find_experiment(tracking_uri: str, name: str) -> str | None:
    """The id of experiment ``name`` in the store, None when it does not exist (none is created);
    an experiment an older robustctl created gets the model-training kind tag."""
    from robustctl.tracking.store import open_client

    client = open_client(tracking_uri)
    found = client.get_experiment_by_name(name)
    return None if found is None else _with_kind(client, found)


MODEL_TRAINING_VIEW = "workflowType=machine_learning"


def runs_view_url(ui_url: str, experiment_id: str | None) -> str:
    """The MLflow UI page listing an experiment's runs, in the model-training view (the UI's home
    page, in that view, without an experiment)."""
    base = ui_url.rstrip("/")
    if experiment_id is None:
        return f"{base}/#/?{MODEL_TRAINING_VIEW}"
    return f"{base}/#/experiments/{experiment_id}/runs?{MODEL_TRAINING_VIEW}"
