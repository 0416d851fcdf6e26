"""The report files: Markdown, one CSV per table, a self-contained HTML page; the rich tables."""

from __future__ import annotations

import base64
import csv
import io
import re

import pytest
from rich.console import Console

from robustctl.errors import TrackingError
from tests.reporting.conftest import ROC_REASON


def test_build_report_writes_every_file(report):
    assert set(report.files) == {
        "report.md",
        "report.html",
        "table1.csv",
        "table2.csv",
        "table3.csv",
        "table4.csv",
        "whitebox_ratio.csv",
        "columns.csv",
    }
    for path in report.files.values():
        assert path.is_file() and path.stat().st_size > 0
    assert [t.key for t in report.tables] == [
        "table1",
        "table2",
        "table3",
        "whitebox_ratio",
        "table4",
    ]


def test_markdown_shows_ours_beside_the_paper_and_reasons(report, store):
    md = report.files["report.md"].read_text()
    assert "| mnist | clean accuracy (%) | 98.71 (99.33) |" in md
    assert "| fashion_mnist | clean accuracy (%) | 90.00 | not run |" in md
    # a long reason: its head in the cell, the whole text as a footnote, whose pipe is escaped
    mark = re.search(r"\| failed; paper 99\.52 \[(\d+)\] \|", md)
    assert mark, md
    assert f"[{mark.group(1)}] failed: TrainingDiverged: loss became nan at step 12 \\| <bad>" in md
    pipes = 0
    for line in md.splitlines():
        if line.startswith("| dataset |"):
            pipes = len(re.findall(r"(?<!\\)\|", line))
        if line.startswith("| mnist |"):
            assert len(re.findall(r"(?<!\\)\|", line)) == pipes, line
    assert ROC_REASON in md
    assert "[1] budget exhausted" in md and "0.550 [1]" in md
    assert store.ids["mnist_ce"] in md and store.ids["mnist_ce_old"] not in md  # the runs used


def test_csv_holds_full_precision_values_references_and_reasons(report, store):
    with report.files["table1.csv"].open() as handle:
        rows = {(r["dataset"], r["metric"]): r for r in csv.DictReader(handle)}
    mnist = rows[("mnist", "clean accuracy (%)")]
    assert float(mnist["ce"]) == 0.9871 and float(mnist["ce_paper"]) == 0.9933
    assert mnist["ce_run"] == store.ids["mnist_ce"] and mnist["ce_note"] == ""
    assert mnist["pdm"] == "" and mnist["pdm_note"].startswith("failed: TrainingDiverged")
    assert float(mnist["center"]) == 0.98 and mnist["center_paper"] == ""
    with report.files["table2.csv"].open() as handle:
        rows = {(r["dataset"], r["attack"]): r for r in csv.DictReader(handle)}
    assert rows[("mnist", "cw")]["ce"] == "" and rows[("mnist", "cw")]["ce_note"] == ROC_REASON
    assert float(rows[("mnist", "fgsm-0.05")]["ce"]) == 0.913


def test_html_is_self_contained_with_the_roc_figure_embedded(report, store):
    page = report.files["report.html"].read_text()
    images = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    by_path = {path: base64.b64decode(data) for path, data in images}
    assert by_path["plots/graybox/roc.png"] == store.png
    assert (
        "plots/confusion_matrix.png" in by_path and "plots/tsne.png" not in by_path
    )  # absent: skipped
    assert 'src="file:' not in page and "mlartifacts" not in page.split("<h2>Figures")[1]
    # error text is escaped, never markup
    assert "&lt;bad&gt;" in page and "<bad>" not in page
    assert "98.71" in page and "(99.33)" in page and "failed: TrainingDiverged" in page


def test_report_without_figures_has_no_images(store, tmp_path):
    from robustctl.reporting import build_report

    report = build_report(store.uri, experiment="robustctl", out_dir=tmp_path, figures=False)
    assert "<img" not in (tmp_path / "report.html").read_text()
    assert report.table("table1").cell("mnist", "clean accuracy (%)", column="ce").value == 0.9871


def test_rich_tables_print_values_and_failures(report):
    console = Console(file=io.StringIO(), width=250, color_system=None)
    report.print(console)
    out = console.file.getvalue()
    for needle in (
        "Table 1",
        "Table 4",
        "98.71 (99.33)",
        "failed: TrainingDiverged",
        "not run; paper 0.990",
        "[1] budget exhausted",
    ):
        assert needle in out, needle


def test_empty_selection_is_a_clear_error(store, tmp_path):
    from robustctl.reporting import build_report

    with pytest.raises(TrackingError, match="no runs in experiment 'empty'"):
        build_report(store.uri, experiment="empty", out_dir=tmp_path)
    assert not (tmp_path / "report.md").exists()
