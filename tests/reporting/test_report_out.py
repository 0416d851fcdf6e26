"""``robustctl report --out`` at a file: one line and exit 2, nothing written."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app

runner = CliRunner()


@pytest.mark.parametrize("below", [False, True])
def test_report_out_at_a_file_is_refused_in_one_line(store, tmp_path, below):
    blocker = tmp_path / "report.txt"
    blocker.write_text("not a folder")
    out = blocker / "latest" if below else blocker
    args = ["report", "--uri", store.uri, "--experiment", "scoped", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert f"--out {out}" in result.output and "a file, not a folder" in result.output
    assert "Traceback" not in result.output and "Error:" not in result.output
    assert blocker.read_text() == "not a folder"
