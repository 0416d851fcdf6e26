"""When the tracking server goes away mid-run: a local journal of every write, replayed later.

:class:`~robustctl.tracking.run.RunTracker` sends each write (metrics, params, tags, artifacts,
the run's end) to MLflow, retrying after ``tracking.retry_delays`` seconds. When the last retry
fails and the server does not answer its ``/health`` check, the run goes on *offline*: this and
every later write of the run is appended to ``<work_dir>/tracking-fallback/<run id>/journal.jsonl``
(artifacts are copied beside it), and the run's end prints how to sync. ``robustctl sync DIR``
replays a journal into the server (``--uri`` another one) in order, then renames it
``journal.synced.jsonl``, so nothing measured is lost and nothing is sent twice.

Only an unreachable HTTP server counts as an outage: any other error (a bad value, a local store
that fails) is raised as before.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from pathlib import Path
from typing import Any

JOURNAL = "journal.jsonl"
LOG_MODEL_OP = "log_model"  # a model's files, uploaded by tracking.model_upload.upload_model
SYNCED = "journal.synced.jsonl"


def server_down(uri: str) -> bool:
    """True when ``uri`` is an HTTP(S) tracking server that does not answer ``/health``."""
    if not uri.startswith(("http://", "https://")):
        return False
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
            return False
    except OSError:
        return True


class Journal:
    """The offline writes of one run, in order, under ``folder``."""

    def __init__(self, folder: Path, uri: str, run_id: str) -> None:
        self.folder, self.uri, self.run_id = folder, uri, run_id
        self.folder.mkdir(parents=True, exist_ok=True)
        self.entries = 0

    def append(self, op: str, **payload: Any) -> None:
        if op in ("log_artifact", "log_text"):  # keep the file: the original may be temporary
            payload = self._keep_file(op, payload)
            op = "log_artifact"
        elif op == LOG_MODEL_OP:  # the model's files, kept until the sync uploads them
            source = Path(payload["local_path"])
            target = self.folder / "files" / f"{self.entries:05d}" / source.name
            shutil.copytree(source, target)
            payload = {**payload, "local_path": str(target)}
        record = {"op": op, "uri": self.uri, "run_id": self.run_id, **payload}
        with open(self.folder / JOURNAL, "a") as fh:
            fh.write(json.dumps(record, default=str) + "\n")
        self.entries += 1

    def _keep_file(self, op: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Copy the artifact (or write the text) into the journal's folder; an artifact entry."""
        if op == "log_text":
            name = Path(payload["artifact_file"])
            parent = str(name.parent)
            artifact_path = None if parent == "." else parent
        else:
            name, artifact_path = Path(payload["local_path"]), payload.get("artifact_path")
        target = self.folder / "files" / f"{self.entries:05d}" / name.name
        target.parent.mkdir(parents=True, exist_ok=True)
        if op == "log_text":
            target.write_text(payload["text"])
        else:
            shutil.copy2(name, target)
        return {"local_path": str(target), "artifact_path": artifact_path}


def send(client: Any, op: str, run_id: str, payload: dict[str, Any]) -> None:
    """Apply one write to an ``MlflowClient``: the tracker's live writes and a journal's replay
    both go through here. Metrics and params are plain dicts (JSON in the journal)."""
    from mlflow.entities import Metric, Param

    if op == "log_batch":
        client.log_batch(
            run_id,
            metrics=[Metric(**m) for m in payload.get("metrics", [])],
            params=[Param(p["key"], p["value"]) for p in payload.get("params", [])],
        )
    elif op == "set_tag":
        client.set_tag(run_id, payload["key"], payload["value"])
    elif op == "log_artifact":
        client.log_artifact(run_id, payload["local_path"], payload["artifact_path"])
    elif op == "log_text":
        client.log_text(run_id, payload["text"], payload["artifact_file"])
    elif op == "log_inputs":
        from robustctl.tracking.inputs import to_mlflow

        client.log_inputs(run_id, datasets=to_mlflow(payload["datasets"]))
    elif op == LOG_MODEL_OP:
        from robustctl.tracking.model_upload import upload_model

        upload_model(client, run_id, payload["local_path"], payload["register_as"], payload["tags"])
    elif op == "set_terminated":
        client.set_terminated(run_id, status=payload["status"])
    else:
        raise ValueError(f"unknown tracking write {op!r}")


def sync(folder: str | Path, uri: str | None = None) -> int:
    """Replay the journal in ``folder`` (a run's fallback folder, or a folder of them) into its
    tracking server (or ``uri``); returns the number of writes replayed (0 when every journal
    there was synced before). A :class:`~robustctl.errors.TrackingError` when ``folder`` holds
    no journal, synced or not."""
    from mlflow.tracking import MlflowClient

    from robustctl.errors import TrackingError

    folder = Path(folder)
    journals = (
        [folder / JOURNAL] if (folder / JOURNAL).is_file() else sorted(folder.glob(f"*/{JOURNAL}"))
    )
    if not journals and not [*folder.glob(SYNCED), *folder.glob(f"*/{SYNCED}")]:
        raise TrackingError(
            f"no tracking journal in {folder}: nothing to sync",
            hint=f"pass the folder of a run that went offline, <work_dir>/tracking-fallback/<run "
            f"id> (it holds {JOURNAL}), or <work_dir>/tracking-fallback for all of them",
        )
    replayed = 0
    clients: dict[str, Any] = {}  # one client per store (a SQL store opens an engine per client)
    for journal in journals:
        records = [json.loads(line) for line in journal.read_text().splitlines() if line.strip()]
        for record in records:
            target = uri or record["uri"]
            if target not in clients:
                clients[target] = MlflowClient(target)
            client = clients[target]
            if record.get("params"):  # params are write-once: skip those the run already has
                existing = client.get_run(record["run_id"]).data.params
                record["params"] = [p for p in record["params"] if p["key"] not in existing]
            send(client, record["op"], record["run_id"], record)
            replayed += 1
        journal.rename(journal.with_name(SYNCED))
    return replayed
