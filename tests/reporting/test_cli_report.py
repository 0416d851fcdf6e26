"""``robustctl report`` through the Typer app: the latest experiment by default, ``--all``."""

from __future__ import annotations

from typer.testing import CliRunner

from robustctl.cli import app

runner = CliRunner()


def test_report_cli_scopes_to_the_latest_experiment_unless_all(store, tmp_path):
    args = ["report", "--uri", store.uri, "--experiment", "scoped"]
    latest = runner.invoke(app, [*args, "--out", str(tmp_path / "latest")])
    assert latest.exit_code == 0, latest.output
    md = (tmp_path / "latest" / "report.md").read_text()
    assert store.ids["b_ce"] in md and store.ids["a_rce"] not in md
    assert "| mnist | clean accuracy (%) | 90.00 (99.33) | not run; paper 99.32 |" in md

    every = runner.invoke(app, [*args, "--all", "--out", str(tmp_path / "all")])
    assert every.exit_code == 0, every.output
    md = (tmp_path / "all" / "report.md").read_text()
    assert store.ids["a_rce"] in md
    assert "| mnist | clean accuracy (%) | 90.00 (99.33) | 80.00 (99.32) |" in md


def test_report_downloads_artifacts_without_progress_bars(store, tmp_path, capfd):
    """The report reads dozens of figures and curves: MLflow's per-file progress bars stay off,
    and the user's own setting is restored afterwards."""
    import os

    from robustctl.reporting import build_report

    os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
    report = build_report(store.uri, experiment="seeds", out_dir=tmp_path)
    assert report.files  # the curves were downloaded and drawn
    assert any(p.name.startswith("whitebox_budget_") for p in report.files.values())
    captured = capfd.readouterr()
    assert "Downloading artifacts" not in captured.err + captured.out
    assert "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR" not in os.environ
