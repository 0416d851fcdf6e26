"""One MLflow run, through ``MlflowClient`` (no global "active run" state).

A :class:`RunTracker` is opened on a store and an experiment, then starts (or, for a resumed
training, reopens) one run. It ends the run exactly once: FINISHED, FAILED or KILLED, with the
reason as the ``error`` tag. Every write after the start is retried when the tracking server does
not answer, and kept in a local journal when it stays away (:mod:`robustctl.tracking.fallback`).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustctl.errors import TrackingError
from robustctl.tracking.experiment import open_experiment
from robustctl.tracking.fallback import Journal, send, server_down

if TYPE_CHECKING:
    from robustctl.evaluation.result import StageResult

_PARAM_BATCH = 100  # MLflow's limit of params per log_batch call
NOTE_TAG = "mlflow.note.content"  # the run description the UI shows on the run page
MAX_TAG_LENGTH = 8000  # MLflow's limit on a tag value
_CONFLICT_RETRIES = 3  # resends of a write that lost a race on the store's unique key
# How SQLite, PostgreSQL and MySQL word a broken unique key, as the store reports it.
_UNIQUE_VIOLATION = ("unique constraint", "duplicate key", "duplicate entry", "integrityerror")


def lost_insert_race(error: BaseException) -> bool:
    """Whether a store refused a write because another writer inserted the same row first."""
    text = str(error).lower()
    return any(marker in text for marker in _UNIQUE_VIOLATION)


class RunTracker:
    """``fallback_dir``: where an unreachable server's writes are journaled (None: raise);
    ``retry_delays``: seconds to wait before each retry of a failed write."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        artifact_location: str | None = None,
        *,
        fallback_dir: Path | None = None,
        retry_delays: tuple[float, ...] = (1.0, 4.0, 16.0),
    ) -> None:
        from mlflow.exceptions import MlflowException

        from robustctl.tracking.store import open_client

        self.uri, self.experiment = uri, experiment
        self.client = open_client(uri)
        self.run_id: str | None = None
        self.run_name: str | None = None
        self.fallback_dir, self.retry_delays = fallback_dir, tuple(retry_delays)
        self.journal: Journal | None = None  # set when the server went away mid-run
        try:
            self.experiment_id = open_experiment(self.client, experiment, artifact_location)
        except MlflowException as exc:
            raise TrackingError(
                f"cannot open MLflow experiment {experiment!r} at {uri}: {exc.message}"
            ) from exc

    # ------------------------------------------------------------------ lifecycle
    def start(self, run_name: str, tags: dict[str, str], run_id: str | None = None) -> str:
        """Create a run, or reopen ``run_id`` (resume): RUNNING again, without the earlier
        attempt's ``error`` tag."""
        from mlflow.exceptions import MlflowException

        if run_id is not None:
            try:
                earlier = self.client.get_run(run_id)
            except MlflowException as exc:
                raise TrackingError(f"MLflow run {run_id} does not exist in {self.uri}") from exc
            self.client.update_run(run_id, status="RUNNING")
            if "error" in earlier.data.tags:  # why the earlier attempt ended; this one may not
                self.client.delete_tag(run_id, "error")
            self.run_id, self.run_name = run_id, earlier.info.run_name
        else:
            created = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
            self.run_id, self.run_name = created.info.run_id, created.info.run_name
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)
        return self.run_id

    def finish(self, status: str = "FINISHED", reason: str | None = None) -> None:
        if self.run_id is None:
            return
        if reason:
            self.write("set_tag", key="error", value=reason[:5000])
        self.write("set_terminated", status=status)
        if self.journal is not None:
            from robustctl.console import console

            console.print(
                f"[yellow]tracking server {self.uri} was unreachable:[/] {self.journal.entries} "
                f"writes of run {self.run_id} are kept in {self.journal.folder}; once the server "
                f"is back: robustctl sync {self.journal.folder}"
            )
        self.run_id = None

    # ------------------------------------------------------------------ writes, retried
    def write(self, op: str, **payload: Any) -> None:
        """Send one write; on failure retry after each of ``retry_delays`` while the server is
        down, then journal this and every later write of the run (module docstring)."""
        from mlflow.exceptions import MlflowException

        run_id = self._id()
        if self.journal is not None:
            self.journal.append(op, **payload)
            return
        for delay in (*self.retry_delays, None):
            try:
                send(self.client, op, run_id, payload)
                return
            except (MlflowException, OSError) as exc:
                if self.fallback_dir is None or not server_down(self.uri):
                    raise
                if delay is None:
                    self._go_offline(exc)
                    self.journal.append(op, **payload)
                    return
                time.sleep(delay)

    def _go_offline(self, error: BaseException) -> None:
        from robustctl.console import console

        folder = Path(self.fallback_dir, self._id())
        self.journal = Journal(folder, self.uri, self._id())
        console.print(
            f"[yellow]tracking server {self.uri} unreachable[/] after {len(self.retry_delays)} "
            f"retries ({str(error).splitlines()[0][:200]}); the run goes on and logs to {folder}"
        )

    def read_run(self) -> Any | None:
        """The run's data (metrics, params, tags) from the store; None while it is unreachable
        (offline runs read nothing back)."""
        from mlflow.exceptions import MlflowException

        if self.journal is not None:
            return None
        try:
            return self.client.get_run(self._id()).data
        except (MlflowException, OSError) as exc:
            if self.fallback_dir is None or not server_down(self.uri):
                raise
            self._go_offline(exc)
            return None

    def logged_steps(self, key: str) -> set[int] | None:
        """The steps at which the run logged metric ``key``; None while the store is unreachable."""
        from mlflow.exceptions import MlflowException

        if self.journal is not None:
            return None
        try:
            return {m.step for m in self.client.get_metric_history(self._id(), key)}
        except (MlflowException, OSError) as exc:
            if self.fallback_dir is None or not server_down(self.uri):
                raise
            self._go_offline(exc)
            return None

    # ------------------------------------------------------------------ logging
    def _id(self) -> str:
        if self.run_id is None:
            raise RuntimeError("no active run: call start() first")
        return self.run_id

    def log_params(self, params: dict[str, str]) -> None:
        data = self.read_run()
        existing = data.params if data is not None else {}
        items = [{"key": k, "value": str(v)[:6000]} for k, v in params.items() if k not in existing]
        for start in range(0, len(items), _PARAM_BATCH):
            self.write("log_batch", params=items[start : start + _PARAM_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        now = int(time.time() * 1000)
        batch = [
            {"key": k, "value": float(v), "timestamp": now, "step": step or 0}
            for k, v in metrics.items()
            if v is not None
        ]
        if batch:
            self.write("log_batch", metrics=batch)

    def set_tags(self, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.write("set_tag", key=key, value=str(value))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.write("log_artifact", local_path=str(path), artifact_path=artifact_path)

    def log_inputs(self, datasets: list[dict[str, Any]]) -> None:
        """Dataset inputs (:func:`robustctl.tracking.inputs.dataset_inputs`).

        MLflow stores a dataset once per experiment, keyed by name and digest, with a look-up
        then an insert. Two sweep jobs logging the same data at the same moment can both miss the
        look-up; the later insert then breaks the store's unique key. The dataset exists by then,
        so the write is sent again and links it (up to ``_CONFLICT_RETRIES`` times)."""
        from mlflow.exceptions import MlflowException

        for attempt in range(_CONFLICT_RETRIES + 1):
            try:
                self.write("log_inputs", datasets=datasets)
                return
            except MlflowException as exc:
                if attempt == _CONFLICT_RETRIES or not lost_insert_race(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def set_description(self, markdown: str) -> None:
        """The run page's description (MLflow's ``mlflow.note.content`` tag), in Markdown."""
        self.write("set_tag", key=NOTE_TAG, value=markdown[:MAX_TAG_LENGTH])

    def log_text(self, text: str, name: str) -> None:
        self.write("log_text", text=text, artifact_file=name)

    def log_dict(self, data: dict[str, Any], name: str) -> None:
        self.log_text(json.dumps(data, indent=2, sort_keys=True, default=str), name)

    def log_result(self, result: StageResult) -> None:
        """Log a stage's metrics, step metrics, tags, documents and figures
        (each figure is closed)."""
        self.log_metrics(result.metrics)
        for key, values in result.step_metrics.items():
            for step, value in enumerate(values):
                self.log_metrics({key: float(value)}, step=step)
        if result.tags:
            self.set_tags(result.tags)
        for name, document in result.documents.items():
            self.log_dict(document, name)
        for name, figure in result.figures.items():
            self.log_figure(figure, name)
            close_figure(figure)

    def log_figure(self, figure: Any, name: str) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Path(name).name
            figure.savefig(path, dpi=120, bbox_inches="tight")
            parent = str(Path(name).parent)
            self.log_artifact(path, None if parent == "." else parent)


def close_figure(figure: Any) -> None:
    """Release a figure made through pyplot (figures built on their own canvas need nothing)."""
    import matplotlib.pyplot as plt

    if plt.fignum_exists(getattr(figure, "number", -1)):
        plt.close(figure)
