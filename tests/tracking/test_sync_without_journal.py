"""``robustctl sync`` on a folder without a journal refuses in one line instead of "synced 0"."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from robustctl.cli import app
from robustctl.errors import TrackingError
from robustctl.tracking.fallback import sync

runner = CliRunner()


def test_sync_of_a_folder_without_a_journal_is_refused(tmp_path):
    (tmp_path / "some-run").mkdir()
    (tmp_path / "some-run" / "notes.txt").write_text("not a journal")
    with pytest.raises(TrackingError, match="no tracking journal in"):
        sync(tmp_path)


def test_the_cli_says_no_journal_was_found_and_where_they_live(tmp_path):
    result = runner.invoke(app, ["sync", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert f"no tracking journal in {tmp_path}" in result.output
    assert "<work_dir>/tracking-fallback/<run id>" in result.output
    assert "synced 0" not in result.output
