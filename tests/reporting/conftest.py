"""One MLflow store (temp SQLite) holding hand-made runs with known metrics, shared by the module.

No training: runs are created with ``MlflowClient`` exactly as ``robustctl.tracking.lifecycle``
tags them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

T0 = 1_700_000_000_000  # ms; run i starts at T0 + i s, so "latest" is well defined

ROC_REASON = (
    "too few pairs for an AUC: 3 < 10 (27 of 30 clean samples classified correctly, "
    "3 of them attacked successfully)"
)
BB_REASON = (
    "too few pairs for an AUC: 2 < 10 (27 of 30 clean samples classified correctly, "
    "2 of them attacked successfully)"
)
WB_NOTE = (
    "budget exhausted (5 binary steps x 20 iterations): success rate 0.900, AUC 0.550; "
    "raise threat_model.whitebox.steps"
)
PDM_ERROR = "TrainingDiverged: loss became nan at step 12 | <bad>\n  hint: lower trainer.lr"


@dataclass
class Store:
    uri: str
    root: Path
    ids: dict[str, str] = field(default_factory=dict)
    png: bytes = b""


def tiny_png(path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1), dpi=20)
    ax.plot([0, 1], [0, 1])
    fig.savefig(path)
    plt.close(fig)
    return path


def make_run(
    client,
    experiment_id: str,
    index: int,
    dataset: str,
    loss: str,
    metrics: dict[str, float],
    status: str = "FINISHED",
    tags: dict[str, str] | None = None,
    error: str | None = None,
    command: str = "run",
) -> str:
    base = {
        "command": command,
        "dataset": dataset,
        "model": "resnet20",
        "loss": loss,
        "attack": "none",
        "defense": "kde",
        "threat_model": "all",
        "config_hash": f"h{index}",
        "seed": "0",
    }
    run = client.create_run(
        experiment_id,
        start_time=T0 + index * 1000,
        tags=base | (tags or {}),
        run_name=f"{command}-{dataset}-{loss}-{index}",
    )
    run_id = run.info.run_id
    client.log_param(run_id, "dataset.name", dataset)
    client.log_param(run_id, "loss.name", loss)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value, timestamp=T0 + index * 1000, step=0)
    if error:
        client.set_tag(run_id, "error", error)
    client.set_terminated(run_id, status=status, end_time=T0 + index * 1000 + 500)
    return run_id


MNIST_CE = {
    "clean/accuracy": 0.9871,
    "embed/dbi": 0.612,
    "graybox/fgsm-0.05/auc": 0.913,
    "graybox/fgsm-0.05/pairs": 40,
    "graybox/fgsm-0.05/success_rate": 0.7,
    "graybox/cw/pairs": 3,
    "graybox/cw/success_rate": 0.1,
    "graybox/pgd/auc": 0.77,
    "graybox/pgd/pairs": 33,
    "whitebox/cw_wb/distortion": 0.0712,
    "whitebox/cw_wb/auc": 0.55,
    "whitebox/cw_wb/success_rate": 0.9,
    "blackbox/cw_wb/transfer_rate": 0.4,
    "blackbox/cw_wb/pairs": 2,
    "blackbox/proxy/agreement": 0.95,
}


@pytest.fixture(scope="package")
def store(tmp_path_factory) -> Store:
    from mlflow.tracking import MlflowClient

    root = tmp_path_factory.mktemp("reporting")
    uri = f"sqlite:///{root / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("robustctl", artifact_location=(root / "mlartifacts").as_uri())
    other = client.create_experiment("other", artifact_location=(root / "mlartifacts").as_uri())
    sweep = client.create_experiment("sweep", artifact_location=(root / "mlartifacts").as_uri())
    client.create_experiment("empty")
    s = Store(uri, root)
    s.ids["mnist_ce_old"] = make_run(
        client, exp, 1, "mnist", "ce", {"clean/accuracy": 0.5, "embed/dbi": 9.0}
    )
    s.ids["mnist_ce"] = make_run(
        client,
        exp,
        2,
        "mnist",
        "ce",
        MNIST_CE,
        tags={
            "graybox/cw/auc_reason": ROC_REASON,
            "whitebox/cw_wb/note": WB_NOTE,
            "blackbox/cw_wb/auc_reason": BB_REASON,
        },
    )
    png = tiny_png(root / "roc.png")
    s.png = png.read_bytes()
    client.log_artifact(s.ids["mnist_ce"], str(png), "plots/graybox")
    client.log_artifact(s.ids["mnist_ce"], str(tiny_png(root / "confusion_matrix.png")), "plots")
    s.ids["mnist_ce_train"] = make_run(
        client, exp, 3, "mnist", "ce", {"train/loss": 0.1}, command="train"
    )
    s.ids["mnist_pdm_failed"] = make_run(
        client, exp, 4, "mnist", "pdm", {}, status="FAILED", error=PDM_ERROR
    )
    s.ids["cifar_rce"] = make_run(
        client, exp, 5, "cifar10", "rce", {"clean/accuracy": 0.91, "embed/dbi": 0.4}
    )
    s.ids["cifar_rce_failed"] = make_run(
        client, exp, 6, "cifar10", "rce", {}, status="FAILED", error="ValueError: later"
    )
    s.ids["cifar_srvl"] = make_run(
        client, exp, 7, "cifar10", "siamese_rvl", {"clean/accuracy": 0.9402, "embed/dbi": 0.25}
    )
    s.ids["fashion_ce"] = make_run(
        client, exp, 8, "fashion_mnist", "ce", {"clean/accuracy": 0.9, "embed/dbi": 0.5}
    )
    s.ids["mnist_center"] = make_run(client, exp, 9, "mnist", "center", {"clean/accuracy": 0.98})
    s.ids["other_rce"] = make_run(client, other, 10, "mnist", "rce", {"clean/accuracy": 0.1})
    parent = client.create_run(sweep, start_time=T0 + 11_000, run_name="sweep").info.run_id
    client.set_terminated(parent)
    s.ids["parent"] = parent
    s.ids["child_ce"] = make_run(
        client,
        sweep,
        12,
        "mnist",
        "ce",
        {"clean/accuracy": 0.97},
        tags={"mlflow.parentRunId": parent},
    )
    s.ids["child_pdm"] = make_run(
        client,
        sweep,
        13,
        "mnist",
        "pdm",
        {"clean/accuracy": 0.96},
        tags={"mlflow.parentRunId": parent},
    )
    s.ids["stray"] = make_run(client, sweep, 14, "mnist", "rce", {"clean/accuracy": 0.95})
    return s


@pytest.fixture(scope="package")
def report(store, tmp_path_factory):
    from robustctl.reporting import build_report

    return build_report(
        store.uri, experiment="robustctl", out_dir=tmp_path_factory.mktemp("out") / "report"
    )
