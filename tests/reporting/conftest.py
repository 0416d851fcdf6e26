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
    params: dict[str, str] | None = None,
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
    for key, value in (params or {}).items():
        client.log_param(run_id, key, value)
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
    add_scoped(client, root, s)
    add_fingerprints(client, root, s)
    add_seeds(client, root, s)
    return s


def _parent(client, exp: str, index: int, name: str, experiment_tag: str) -> str:
    tags = {"command": "experiment", "experiment": experiment_tag}
    run = client.create_run(exp, start_time=T0 + index * 1000, tags=tags, run_name=name)
    client.set_terminated(run.info.run_id, end_time=T0 + index * 1000 + 900)
    return run.info.run_id


def add_scoped(client, root: Path, s: Store) -> None:
    """Experiment ``scoped``: two experiments (parent runs) with their children; the second is
    the latest. Parent A's child trained RCE, parent B's children CE and PDM."""
    exp = client.create_experiment("scoped", artifact_location=(root / "mlartifacts").as_uri())
    s.ids["parent_a"] = _parent(client, exp, 20, "experiment-paper_a", "paper_a")
    child = {"mlflow.parentRunId": s.ids["parent_a"]}
    s.ids["a_rce"] = make_run(client, exp, 21, "mnist", "rce", {"clean/accuracy": 0.80}, tags=child)
    s.ids["a_ce"] = make_run(client, exp, 22, "mnist", "ce", {"clean/accuracy": 0.70}, tags=child)
    s.ids["parent_b"] = _parent(client, exp, 23, "experiment-paper_b", "paper_b")
    child = {"mlflow.parentRunId": s.ids["parent_b"]}
    s.ids["b_ce"] = make_run(client, exp, 24, "mnist", "ce", {"clean/accuracy": 0.90}, tags=child)
    s.ids["b_pdm"] = make_run(client, exp, 25, "mnist", "pdm", {"clean/accuracy": 0.91}, tags=child)


WB_PARAMS = {
    "model.name": "resnet20",
    "threat_model.num_samples": "500",
    "threat_model.whitebox.binary_steps": "5",
    "threat_model.whitebox.steps": "20",
    "threat_model.whitebox.lr": "0.01",
    "threat_model.blackbox.proxy_model": "resnet32",
    "threat_model.blackbox.epochs": "10",
}


def add_fingerprints(client, root: Path, s: Store) -> None:
    """Experiment ``fingerprints`` (no parent run): three MNIST PDM groups. ``fp_a`` (10 epochs)
    logged two gray-box attacks and the white-box stage; ``fp_b`` (20 epochs, newer) logged only
    fgsm-0.05; ``fp_c`` is the centroid-normalized variant. Two old runs without fingerprint tags
    differ only in seed and device (one fallback group)."""
    exp = client.create_experiment(
        "fingerprints", artifact_location=(root / "mlartifacts").as_uri()
    )
    a = {"fingerprint": "aaaaaa111111", "variant": ""}
    s.ids["fp_a"] = make_run(
        client,
        exp,
        30,
        "mnist",
        "pdm",
        {
            "clean/accuracy": 0.99,
            "graybox/fgsm-0.05/auc": 0.95,
            "graybox/fgsm-0.05/pairs": 100,
            "graybox/bim-0.1/auc": 0.97,
            "graybox/bim-0.1/pairs": 100,
            "whitebox/cw_wb/distortion": 0.15,
        },
        tags=a,
        params={**WB_PARAMS, "trainer.epochs": "10"},
    )
    s.ids["fp_b"] = make_run(
        client,
        exp,
        31,
        "mnist",
        "pdm",
        {"clean/accuracy": 0.995, "graybox/fgsm-0.05/auc": 0.60, "graybox/fgsm-0.05/pairs": 90},
        tags={"fingerprint": "bbbbbb222222", "variant": ""},
        params={**WB_PARAMS, "trainer.epochs": "20"},
    )
    s.ids["fp_c"] = make_run(
        client,
        exp,
        32,
        "mnist",
        "pdm",
        {"clean/accuracy": 0.97},
        tags={"fingerprint": "cccccc333333", "variant": "rvl_normalization=centroid"},
        params={**WB_PARAMS, "trainer.epochs": "10", "loss.rvl_normalization": "centroid"},
    )
    old = {"trainer.epochs": "5", "trainer.seed": "0", "trainer.device": "cpu"}
    s.ids["old_ce_0"] = make_run(
        client, exp, 33, "mnist", "ce", {"clean/accuracy": 0.90}, params=old
    )
    s.ids["old_ce_1"] = make_run(
        client,
        exp,
        34,
        "mnist",
        "ce",
        {"clean/accuracy": 0.92},
        tags={"seed": "1"},
        params={**old, "trainer.seed": "1", "trainer.device": "cuda"},
    )


# experiment ``seeds``: PDM with three seeds, CE with four, RCE with one
MEDIAN = "whitebox/cw_wb/median_distortion"
PDM_SEEDS = {  # seed -> metrics
    "0": {
        "clean/accuracy": 0.99,
        "graybox/fgsm-0.05/auc": 0.90,
        "graybox/fgsm-0.05/pairs": 40,
        "embed/input_grad_norm": 2.5,
        "embed/input_grad_norm_ce": 5.0,
        "whitebox/cw_wb/distortion": 0.16,
        "whitebox/cw_wb/median_distortion": 0.14,
    },
    "1": {
        "clean/accuracy": 0.98,
        "graybox/fgsm-0.05/auc": 0.94,
        "graybox/fgsm-0.05/pairs": 25,
        "embed/input_grad_norm": 3.5,
        "embed/input_grad_norm_ce": 6.0,
        "whitebox/cw_wb/distortion": 0.15,
        "whitebox/cw_wb/median_distortion": float("nan"),
    },
    "2": {
        "clean/accuracy": 0.97,
        "graybox/fgsm-0.05/auc": 0.95,
        "graybox/fgsm-0.05/pairs": 50,
        "embed/input_grad_norm": 4.5,
        "embed/input_grad_norm_ce": 7.0,
        "whitebox/cw_wb/distortion": 0.18,
        "whitebox/cw_wb/median_distortion": 0.16,
        # the bootstrap's upper end lies beyond the budget (logged as NaN)
        "whitebox/cw_wb/median_distortion_ci_low": 0.12,
        "whitebox/cw_wb/median_distortion_ci_high": float("nan"),
    },
}
CE_SEEDS = {
    "0": {"clean/accuracy": 0.98, "whitebox/cw_wb/distortion": 0.08, MEDIAN: 0.07},
    "1": {"clean/accuracy": 0.98, "whitebox/cw_wb/distortion": 0.10, MEDIAN: 0.05},
    "2": {"clean/accuracy": 0.98, "whitebox/cw_wb/distortion": 0.09, MEDIAN: 0.10},
    "3": {"clean/accuracy": 0.98, "whitebox/cw_wb/distortion": 0.50, MEDIAN: 0.5},  # no PDM seed 3
}
RCE_ONE = {
    "clean/accuracy": 0.985,
    "graybox/fgsm-0.05/auc": 0.912,
    "graybox/fgsm-0.05/auc_ci_low": 0.871,
    "graybox/fgsm-0.05/auc_ci_high": 0.948,
    "graybox/fgsm-0.05/pairs": 85,
    "graybox/bim-0.1/auc": 0.70,
    "graybox/bim-0.1/pairs": 12,
    "whitebox/cw_wb/distortion": 0.1,
    "whitebox/cw_wb/distortion_ci_low": 0.09,
    "whitebox/cw_wb/distortion_ci_high": 0.11,
    "whitebox/cw_wb/median_distortion": float("nan"),
    "blackbox/cw_wb/proxy_success_rate": 0.8,
}
# the white-box budget-curve artifacts of PDM seeds 0 and 1 (seed 2 has none)
CURVES = {"0": [0.1, None, 0.3, 0.2], "1": [0.05, None]}


def add_seeds(client, root: Path, s: Store) -> None:
    """Experiment ``seeds``: one parent run; PDM seeds 0-2 (plus an older seed-0 run and a newer
    failed seed-1 run), CE seeds 0-3, RCE seed 0; PDM seeds 0 and 1 log budget curves."""
    import json

    exp = client.create_experiment("seeds", artifact_location=(root / "mlartifacts").as_uri())
    parent = _parent(client, exp, 40, "experiment-seeds", "seeds")
    s.ids["seeds_parent"] = parent
    child = {"mlflow.parentRunId": parent}
    pdm = child | {
        "fingerprint": "dddddd444444",
        "variant": "",
        "embed/input_grad_norm_loss": "rce",
    }
    s.ids["pdm_seed0_old"] = make_run(
        client, exp, 41, "mnist", "pdm", {"clean/accuracy": 0.10}, tags=pdm
    )
    for i, (seed, metrics) in enumerate(PDM_SEEDS.items()):
        s.ids[f"pdm_{seed}"] = make_run(
            client,
            exp,
            42 + i,
            "mnist",
            "pdm",
            metrics,
            tags=pdm | {"seed": seed},
            params={**WB_PARAMS, "trainer.epochs": "10"},
        )
        if seed in CURVES:
            path = root / f"curve_{seed}" / "cw_wb_budget_curve.json"
            path.parent.mkdir()
            path.write_text(json.dumps({"distortions": CURVES[seed], "unit": "L2/sqrt(n)"}))
            client.log_artifact(s.ids[f"pdm_{seed}"], str(path), "whitebox")
    s.ids["pdm_seed1_failed"] = make_run(
        client,
        exp,
        45,
        "mnist",
        "pdm",
        {},
        status="FAILED",
        error="E: boom",
        tags=pdm | {"seed": "1"},
    )
    ce = child | {"fingerprint": "eeeeee555555", "variant": "", "embed/input_grad_norm_loss": "ce"}
    for i, (seed, metrics) in enumerate(CE_SEEDS.items()):
        s.ids[f"ce_{seed}"] = make_run(
            client, exp, 46 + i, "mnist", "ce", metrics, tags=ce | {"seed": seed}
        )
    s.ids["rce_0"] = make_run(
        client, exp, 50, "mnist", "rce", RCE_ONE, tags=child | {"fingerprint": "ffffff666666"}
    )


@pytest.fixture(scope="package")
def report(store, tmp_path_factory):
    from robustctl.reporting import build_report

    return build_report(
        store.uri, experiment="robustctl", out_dir=tmp_path_factory.mktemp("out") / "report"
    )
