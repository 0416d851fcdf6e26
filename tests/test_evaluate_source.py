"""``robustctl evaluate`` evaluates the model it says it does: overrides that contradict the
checkpoint are refused, the run records the checkpoint's training settings, the latest-model
lookup keeps to the asked dataset, and a downloaded checkpoint is named and cleaned up."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from robustctl.cli import app
from tests.runs import digits_overrides

runner = CliRunner()


def client_of(work: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{work / 'mlruns.db'}")


def evaluate_runs(work: Path) -> list:
    client = client_of(work)
    exp = client.get_experiment_by_name("robustctl")
    return client.search_runs([exp.experiment_id], "tags.command = 'evaluate'")


# Trained once for the module: a 2-epoch ResNet-20 of width 8, RCE, batch 32 on synthetic data.
TRAINED_WITH = [
    "model.width=8",
    "loss=rce",
    "trainer.epochs=2",
    "trainer.batch_size=32",
    "trainer.seed=3",
]


def evaluate_args(work: Path) -> list[str]:
    """Evaluate's own overrides: the data and machine, nothing about the training."""
    return [
        "dataset=synthetic",
        "dataset.num_samples=240",
        "trainer.device=cpu",
        "defense=none",
        "threat_model=none",
        f"work_dir={work}",
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path]:
    work = tmp_path_factory.mktemp("trained")
    result = runner.invoke(app, ["train", *evaluate_args(work), *TRAINED_WITH])
    assert result.exit_code == 0, result.output
    (checkpoint,) = work.glob("checkpoints/*/last.pt")
    return work, checkpoint


@pytest.mark.parametrize(
    "override, key",
    [
        ("model=resnet32", "model.name"),
        ("loss=ce", "loss.name"),
        ("transform=jpeg", "transform.name"),
        ("model.width=16", "model.width"),
        ("trainer.epochs=30", "trainer.epochs"),
    ],
)
def test_an_override_that_contradicts_the_checkpoint_is_refused(trained, override, key):
    work, checkpoint = trained
    before = len(evaluate_runs(work))
    result = runner.invoke(
        app, ["evaluate", *evaluate_args(work), f"evaluate.checkpoint={checkpoint}", override]
    )
    assert result.exit_code == 2, result.output
    assert f"was trained with {key}=" in result.output and f"ask for {key}=" in result.output
    assert len(evaluate_runs(work)) == before  # refused before any run opened


def test_the_run_records_the_checkpoints_training_settings_not_evaluates_defaults(trained):
    """Evaluate's defaults (resnet20 width 16, CE, 30 epochs, batch 128, seed 0) differ from the
    checkpoint's; the run's params, tags and name carry the checkpoint's. Machine settings that
    the user gave (trainer.device) stay evaluate's."""
    work, checkpoint = trained
    args = [*evaluate_args(work), f"evaluate.checkpoint={checkpoint}", "trainer.eval_batch_size=7"]
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 0, result.output
    run = max(evaluate_runs(work), key=lambda r: r.info.start_time)
    params = run.data.params
    assert (params["model.width"], params["loss.name"], params["trainer.epochs"]) == (
        "8",
        "rce",
        "2",
    )
    assert (params["trainer.batch_size"], params["trainer.seed"]) == ("32", "3")
    assert (params["trainer.device"], params["trainer.eval_batch_size"]) == ("cpu", "7")
    assert run.data.tags["loss"] == "rce" and run.data.tags["seed"] == "3"
    assert run.info.run_name.startswith("evaluate-synthetic-resnet20-rce-s3-")


@pytest.mark.slow  # ~9-12 s: the system tier keeps `make test` under 8 min
def test_the_latest_model_is_looked_up_on_the_asked_dataset(tmp_path):
    """Digits first, synthetic second: `evaluate dataset=digits` takes the digits model (it used
    to take the latest run whatever its dataset, and refuse it as "trained on synthetic")."""
    digits = digits_overrides(tmp_path, "trainer.epochs=1", "dataset.train_limit=300")
    assert runner.invoke(app, ["train", *digits]).exit_code == 0
    synthetic = [*evaluate_args(tmp_path), "trainer.epochs=1", "model.width=8"]
    assert runner.invoke(app, ["train", *synthetic]).exit_code == 0
    client = client_of(tmp_path)
    exp = client.get_experiment_by_name("robustctl")
    (digits_run,) = client.search_runs([exp.experiment_id], "tags.dataset = 'digits'")
    result = runner.invoke(app, ["evaluate", *digits])
    assert result.exit_code == 0, result.output
    (evaluated,) = evaluate_runs(tmp_path)
    assert evaluated.data.tags["source_run"] == digits_run.info.run_id
    # a model asked for by name that was never trained on the dataset: one line, exit 2
    missing = runner.invoke(app, ["evaluate", *digits, "loss=rce"])
    assert missing.exit_code == 2, missing.output
    assert "no finished training run on dataset digits, model resnet20, loss rce" in missing.output


def test_a_downloaded_checkpoint_is_named_by_its_run_and_deleted_after_loading(
    trained, tmp_path, monkeypatch
):
    import tempfile

    work, _ = trained
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    client = client_of(work)
    exp = client.get_experiment_by_name("robustctl")
    (train_run,) = client.search_runs([exp.experiment_id], "tags.command = 'train'")
    run_id = train_run.info.run_id
    result = runner.invoke(app, ["evaluate", *evaluate_args(work), f"evaluate.run_id={run_id}"])
    assert result.exit_code == 0, result.output
    assert "robustctl-checkpoint-" not in result.output  # no temporary path shown as the model
    assert not list(tmp_path.glob("robustctl-*")), "the downloaded checkpoint was left behind"
    run = max(evaluate_runs(work), key=lambda r: r.info.start_time)
    assert run.data.tags["source_checkpoint"] == f"runs:/{run_id}/checkpoints/last.pt"


def test_a_relative_checkpoint_path_is_read_from_the_current_folder(trained, tmp_path, monkeypatch):
    """``work_dir=W evaluate.checkpoint=W/checkpoints/...`` from the folder holding W: the path
    used to be joined to work_dir a second time (W/W/checkpoints/...)."""
    work, checkpoint = trained
    monkeypatch.chdir(work.parent)
    relative = checkpoint.relative_to(work.parent)
    args = [a for a in evaluate_args(work) if not a.startswith("work_dir=")]
    args += [f"work_dir={work.name}", f"evaluate.checkpoint={relative}"]
    result = runner.invoke(app, ["evaluate", *args])
    assert result.exit_code == 0, result.output
