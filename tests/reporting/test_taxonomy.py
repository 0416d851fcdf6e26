"""Table 6 (one row per defense, one column per metric) and the robustness-accuracy scatter.

Expected numbers are worked out by hand from the fake runs below (dataset ``digits``):

- ``CE (baseline)``: one run, success rate 0.8 with its Wilson interval [0.7, 0.88];
- ``CE (norm=none)``: one run without a detector;
- ``CE (transform=jpeg(quality=75))``: seeds 0 and 1, so mean ± sample sd;
- ``PDM (train_defense=pgd_at(eps=0.1, steps=7))``: clean evaluation finished, the gray-box
  evaluation failed.
"""

from __future__ import annotations

import math

import pytest

from robustctl.reporting.collect import RunRecord
from robustctl.reporting.tables import build_tables
from robustctl.reporting.taxonomy import (
    X_LABEL,
    Y_LABEL,
    draw_scatter,
    scatter_panels,
    table6,
    taxonomy_parts,
)

JPEG = "transform=jpeg(quality=75)"
PGD = "train_defense=pgd_at(eps=0.1, steps=7)"
FAILURE = "RuntimeError: CUDA error during fgsm-0.1"
SUCCESS = "graybox/fgsm-0.1/success_rate"
AUC = "graybox/fgsm-0.1/auc"
WB_DIST, WB_SUCCESS = "whitebox/cw_wb/distortion", "whitebox/cw_wb/success_rate"
METRIC_COLUMNS = ["clean/accuracy", SUCCESS, AUC, WB_DIST, WB_SUCCESS, "embed/dbi"]
SD2 = math.sqrt(2) * 0.01  # sample sd of two values 0.02 apart: sqrt(2 * 0.01^2 / 1)


def record(
    i: int,
    loss: str,
    variant: str,
    metrics: dict[str, float],
    *,
    seed: str = "0",
    defense: str = "kde",
    status: str = "FINISHED",
    dataset: str = "digits",
    error: str | None = None,
) -> RunRecord:
    tags = {
        "dataset": dataset,
        "loss": loss,
        "defense": defense,
        "variant": variant,
        "fingerprint": f"{dataset}-{loss}-{variant}-{defense}",
        "seed": seed,
        "command": "run",
    }
    if error:
        tags["error"] = error
    return RunRecord(f"r{i}", f"r{i}", "1", status, 1000 * i, 1000 * i + 1, tags, {}, metrics)


def baseline(i: int = 1, dataset: str = "digits") -> RunRecord:
    return record(
        i,
        "ce",
        "",
        {
            "clean/accuracy": 0.98,
            "embed/dbi": 0.5,
            SUCCESS: 0.8,
            SUCCESS + "_ci_low": 0.7,
            SUCCESS + "_ci_high": 0.88,
            AUC: 0.9,
            "graybox/fgsm-0.1/pairs": 40.0,
            WB_DIST: 0.05,
            WB_DIST + "_ci_low": 0.04,
            WB_DIST + "_ci_high": 0.06,
            WB_SUCCESS: 1.0,
        },
        dataset=dataset,
    )


def taxonomy_runs() -> list[RunRecord]:
    jpeg = [
        record(
            2 + s,
            "ce",
            JPEG,
            {
                "clean/accuracy": acc,
                "embed/dbi": dbi,
                SUCCESS: rate,
                AUC: auc,
                "graybox/fgsm-0.1/pairs": pairs,
                WB_DIST: dist,
                WB_SUCCESS: 1.0,
            },
            seed=str(s),
        )
        for s, (acc, dbi, rate, auc, pairs, dist) in enumerate(
            [(0.96, 0.6, 0.5, 0.7, 30.0, 0.02), (0.94, 0.7, 0.3, 0.8, 20.0, 0.04)]
        )
    ]
    no_norm_metrics = {"clean/accuracy": 0.9, "embed/dbi": 1.5, SUCCESS: 0.9}
    no_norm = record(4, "ce", "norm=none", no_norm_metrics, defense="none")
    pgd_clean = record(5, "pdm", PGD, {"clean/accuracy": 0.93, "embed/dbi": 0.4})
    pgd_failed = record(6, "pdm", PGD, {}, status="FAILED", error=FAILURE)
    return [baseline(), *jpeg, no_norm, pgd_clean, pgd_failed]


LABELS = [
    "CE (baseline)",
    "CE (norm=none)",
    f"CE ({JPEG})",
    f"PDM ({PGD})",
]


def test_one_row_per_defense_and_one_column_per_metric():
    table = table6(taxonomy_runs())
    assert table.columns == ["dataset", "defense", *METRIC_COLUMNS]
    assert [row[:2] for row in table.rows] == [["digits", label] for label in LABELS]
    assert [table.header(c) for c in METRIC_COLUMNS] == [
        "clean accuracy (%)",
        "fgsm-0.1 success rate",
        "fgsm-0.1 detection AUC",
        "C&W-wb mean distortion",
        "C&W-wb success rate",
        "DBI (embeddings)",
    ]
    # the caption says what the success rate is computed over
    assert "clean-correct attacked images" in table.caption
    assert all(c.reference is None for c in table.cells())  # the paper has none of these


def test_two_seeds_give_the_mean_and_sd_and_one_run_its_interval():
    table = table6(taxonomy_runs())
    jpeg = LABELS[2]
    acc = table.cell("digits", jpeg, column="clean/accuracy")
    assert acc.value == pytest.approx(0.95) and acc.sd == pytest.approx(SD2)
    assert acc.n_seeds == 2 and acc.run_ids == ("r2", "r3")
    rate = table.cell("digits", jpeg, column=SUCCESS)
    # (0.5 + 0.3) / 2 = 0.4; sd sqrt((0.1^2 + 0.1^2) / 1) = 0.1414
    assert rate.value == pytest.approx(0.4) and rate.sd == pytest.approx(math.sqrt(0.02))
    assert rate.text() == "0.400 ± 0.141, 2 seeds"
    auc = table.cell("digits", jpeg, column=AUC)
    assert auc.value == pytest.approx(0.75) and auc.pairs == 20  # the smaller pair count
    assert table.cell("digits", jpeg, column=WB_DIST).value == pytest.approx(0.03)
    assert table.cell("digits", jpeg, column="embed/dbi").value == pytest.approx(0.65)
    one = table.cell("digits", LABELS[0], column=SUCCESS)
    assert (one.value, one.ci_low, one.ci_high, one.n_seeds) == (0.8, 0.7, 0.88, 1)
    assert one.text() == "0.800 [0.700, 0.880]"
    dist = table.cell("digits", LABELS[0], column=WB_DIST)
    assert dist.text() == "0.05 [0.04, 0.06]"


def test_missing_metrics_give_their_reason():
    table = table6(taxonomy_runs())
    no_detector = table.cell("digits", LABELS[1], column=AUC)
    assert no_detector.value is None and no_detector.reason == "no detector (defense=none)"
    assert table.cell("digits", LABELS[1], column=SUCCESS).value == 0.9
    assert table.cell("digits", LABELS[1], column=WB_DIST).reason == "not run"
    pgd = table.cell("digits", LABELS[3], column=SUCCESS)
    assert pgd.value is None and pgd.failed and pgd.reason == f"failed: {FAILURE}"
    assert pgd.ours() == "failed"  # a long reason: its head in the cell, the rest a footnote
    marks, notes = table.footnotes()
    row = [r[1] for r in table.rows].index(LABELS[3])
    assert notes[marks[(row, table.columns.index(SUCCESS))][0] - 1] == f"failed: {FAILURE}"
    # the finished clean evaluation of the same group still fills its cells
    assert table.cell("digits", LABELS[3], column="clean/accuracy").value == 0.93


def test_taxonomy_parts_reads_the_variant_at_its_top_level():
    variant = f"center_norm=l2, transform=jpeg(quality=75, x=1), {PGD}"
    assert taxonomy_parts(variant) == ["transform=jpeg(quality=75, x=1)", PGD]
    assert taxonomy_parts("norm=group") == ["norm=group"]
    assert taxonomy_parts("rvl_normalization=centroid") == []
    assert taxonomy_parts("") == []


def test_the_table_appears_only_with_a_taxonomy_defense():
    paper = [
        baseline(1),
        record(2, "pdm", "rvl_normalization=centroid", {"clean/accuracy": 0.97}),
        # a loss option whose name ends in "norm" is no taxonomy defense
        record(3, "center", "center_norm=l2", {"clean/accuracy": 0.96}),
    ]
    assert table6(paper).rows == []
    keys = ["table1", "table2", "table3", "whitebox_ratio", "table4"]
    assert [t.key for t in build_tables(paper)] == keys
    tables = build_tables(taxonomy_runs())
    assert [t.key for t in tables] == [*keys, "table6"]
    # the paper tables are the same with or without Table 6 (none reads it)
    assert tables[0].cell("digits", "clean accuracy (%)", column="ce").value == 0.98


def test_a_taxonomy_experiment_of_losses_only_gets_the_table():
    """experiments/taxonomy_category1_*: the defenses are losses, no variant names a taxonomy
    option, yet the runs are a taxonomy comparison; the paper's experiments are not."""
    losses = [baseline(1), record(2, "pdm", "rvl_normalization=centroid", {"clean/accuracy": 0.97})]
    for run in losses:
        run.tags["experiment"] = "paper_digits"
    assert table6(losses).rows == []
    for run in losses:
        run.tags["experiment"] = "taxonomy_category1_digits"
    rows = table6(losses).rows
    assert [row[1] for row in rows] == ["CE (baseline)", "PDM (rvl_normalization=centroid)"]
    assert table6(losses).cell("digits", rows[1][1], column="clean/accuracy").value == 0.97


def test_only_datasets_with_a_taxonomy_defense_get_rows():
    runs = [*taxonomy_runs(), baseline(10, dataset="mnist")]
    assert {row[0] for row in table6(runs).rows} == {"digits"}


def test_the_report_without_taxonomy_runs_is_unchanged(report):
    assert "table6" not in [t.key for t in report.tables] and report.scatter_figures == []
    assert not any(name.startswith("robust_accuracy") for name in report.files)
    assert "Table 6" not in report.files["report.md"].read_text()
    assert report.title == "robustctl report: PDM Tables 1-4"


def test_scatter_points_are_the_table_cells():
    (panel,) = scatter_panels(table6(taxonomy_runs()))
    assert (panel.dataset, panel.attack) == ("digits", "fgsm-0.1")
    points = {p.label: p for p in panel.points}
    assert list(points) == LABELS[:3]
    base = points[LABELS[0]]
    # y = 1 - success rate; the Wilson interval [0.7, 0.88] flips to [0.12, 0.3]
    assert (base.x, base.y) == (0.98, pytest.approx(0.2)) and base.x_bounds is None
    assert base.y_bounds == pytest.approx((0.12, 0.3))
    jpeg = points[LABELS[2]]
    assert (jpeg.x, jpeg.y) == (pytest.approx(0.95), pytest.approx(0.6))
    assert jpeg.x_bounds == pytest.approx((0.95 - SD2, 0.95 + SD2))
    sd = math.sqrt(0.02)
    assert jpeg.y_bounds == pytest.approx((0.6 - sd, 0.6 + sd))
    assert jpeg.run_ids == ("r2", "r3")
    no_norm = points[LABELS[1]]
    assert (no_norm.y, no_norm.y_bounds) == (pytest.approx(0.1), None)
    assert panel.omitted == [f"{LABELS[3]}: success rate failed: {FAILURE}"]


def test_the_figure_plots_those_points_with_their_error_bars():
    (panel,) = scatter_panels(table6(taxonomy_runs()))
    figure = draw_scatter([panel])
    ax = figure.axes[0]
    assert ax.get_xlabel() == X_LABEL and ax.get_ylabel() == Y_LABEL
    assert "whole test set" in X_LABEL and "clean-correct attacked images" in Y_LABEL
    drawn = {}
    for container in ax.containers:
        data_line, _caps, bars = container.lines
        drawn[container.get_label()] = (
            (data_line.get_xdata()[0], data_line.get_ydata()[0]),
            container.has_xerr,
            # each bar's ends (x0, y0, x1, y1), x bars before y bars
            [
                [float(v) for v in segment.ravel()]
                for collection in bars
                for segment in collection.get_segments()
            ],
        )
    assert list(drawn) == [f"{i}: {label}" for i, label in enumerate(LABELS[:3], 1)]
    point, has_xerr, segments = drawn[f"1: {LABELS[0]}"]
    assert point == pytest.approx((0.98, 0.2)) and not has_xerr
    assert segments == [pytest.approx([0.98, 0.12, 0.98, 0.3])]
    point, has_xerr, segments = drawn[f"3: {LABELS[2]}"]
    sd = math.sqrt(0.02)
    assert point == pytest.approx((0.95, 0.6)) and has_xerr
    assert segments == [
        pytest.approx([0.95 - SD2, 0.6, 0.95 + SD2, 0.6]),
        pytest.approx([0.95, 0.6 - sd, 0.95, 0.6 + sd]),
    ]
    legend = [t.get_text() for t in figure.legends[0].get_texts()]
    assert legend == [f"{i}: {label}" for i, label in enumerate(LABELS[:3], 1)]


def test_build_report_writes_table6_and_embeds_the_scatter(tmp_path):
    from mlflow.tracking import MlflowClient

    from robustctl.reporting import build_report
    from tests.reporting.conftest import make_run

    uri = f"sqlite:///{tmp_path / 'mlruns.db'}"
    client = MlflowClient(uri)
    exp = client.create_experiment("taxonomy", artifact_location=(tmp_path / "art").as_uri())
    for i, run in enumerate(taxonomy_runs()[:4]):
        tags = {k: run.tags[k] for k in ("variant", "fingerprint", "seed", "defense")}
        make_run(client, exp, i, "digits", run.loss, run.metrics, tags=tags)
    report = build_report(uri, experiment="taxonomy", out_dir=tmp_path / "out")
    assert report.table("table6").cell("digits", LABELS[2], column=SUCCESS).value == (
        pytest.approx(0.4)
    )
    (figure,) = report.scatter_figures
    assert figure.name == "robust_accuracy_digits.png"
    assert report.files[figure.name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "table6.csv" in report.files
    md = report.files["report.md"].read_text()
    assert md.startswith("# robustctl report: PDM Tables 1-4, Table 6 (taxonomy)\n")
    assert "## Table 6: defense taxonomy" in md
    assert "](robust_accuracy_digits.png)" in md and figure.caption in md
    page = report.files["report.html"].read_text()
    assert '<img alt="robust_accuracy_digits.png" src="data:image/png;base64,' in page
