"""Uncertainty on every cell, the white-box ratio table, the new rows and the budget curves.

Expected numbers are worked out by hand from the metrics in conftest (experiment ``seeds``).
"""

from __future__ import annotations

import csv
import math

import pytest

from robustctl.reporting import build_report, success_curve
from robustctl.reporting.cells import FEW_PAIRS_NOTE, Cell
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.ratios import ONE_PAIR_NOTE
from robustctl.reporting.uncertainty import run_estimate
from tests.reporting.conftest import CURVES, PDM_SEEDS


@pytest.fixture(scope="module")
def seeds_report(store, tmp_path_factory):
    return build_report(store.uri, experiment="seeds", out_dir=tmp_path_factory.mktemp("seeds"))


def _notes(table, labels, column):
    marks, notes = table.footnotes()
    index = table.columns.index(column)
    row = next(i for i, r in enumerate(table.rows) if tuple(r[: len(labels)]) == labels)
    return [notes[m - 1] for m in marks.get((row, index), ())]


def test_three_seeds_give_mean_and_sample_sd(seeds_report, store):
    acc = seeds_report.table("table1").cell("mnist", "clean accuracy (%)", column="pdm")
    # 0.99, 0.98, 0.97 -> mean 0.98, sd sqrt((0.01^2 + 0 + 0.01^2) / 2) = 0.01
    assert acc.value == pytest.approx(0.98) and acc.sd == pytest.approx(0.01)
    assert acc.text() == "98.00 ± 1.00, 3 seeds (99.52)"
    # the latest finished run per seed: not the older seed-0 run, not the newer failed seed-1 run
    assert acc.run_ids == (store.ids["pdm_0"], store.ids["pdm_1"], store.ids["pdm_2"])
    auc = seeds_report.table("table2").cell("mnist", "fgsm-0.05", column="pdm")
    # 0.90, 0.94, 0.95 -> mean 0.93, sd sqrt((0.0009 + 0.0001 + 0.0004) / 2) = 0.026458
    assert auc.value == pytest.approx(0.93) and auc.sd == pytest.approx(0.0264575, abs=1e-6)
    assert (auc.n_seeds, auc.pairs) == (3, 25)  # the smallest pair count
    assert auc.text() == "0.930 ± 0.026, 3 seeds, min n=25 (0.988)"
    assert _notes(seeds_report.table("table2"), ("mnist", "fgsm-0.05"), "pdm") == [FEW_PAIRS_NOTE]


def test_single_run_auc_shows_its_interval_and_pair_count(seeds_report):
    t2 = seeds_report.table("table2")
    fgsm = t2.cell("mnist", "fgsm-0.05", column="rce")
    assert fgsm.text() == "0.912 [0.871, 0.948], n=85 (0.983)"
    assert _notes(t2, ("mnist", "fgsm-0.05"), "rce") == []
    # 12 pairs: no interval was logged, and the cell is marked
    bim = t2.cell("mnist", "bim-0.1", column="rce")
    assert bim.text() == "0.700, n=12 (0.920)"
    assert _notes(t2, ("mnist", "bim-0.1"), "rce") == ["AUC from fewer than 30 pairs"]
    assert "AUC from fewer than 30 pairs" in (seeds_report.files["report.md"]).read_text()


def test_csv_has_separate_uncertainty_columns(seeds_report, store):
    with seeds_report.files["table2.csv"].open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["attack"] == "fgsm-0.05")
    assert (float(row["rce"]), float(row["rce_ci_low"]), float(row["rce_ci_high"])) == (
        0.912,
        0.871,
        0.948,
    )
    assert row["rce_pairs"] == "85" and row["rce_n_seeds"] == "1" and row["rce_sd"] == ""
    assert float(row["pdm_sd"]) == pytest.approx(0.0264575, abs=1e-6)
    assert row["pdm_n_seeds"] == "3" and row["pdm_pairs"] == "25" and row["pdm_ci_low"] == ""
    assert row["pdm_run"].split(";") == [store.ids[f"pdm_{s}"] for s in "012"]


def test_new_rows_of_tables_1_3_4(seeds_report):
    t1, t3, t4 = (seeds_report.table(k) for k in ("table1", "table3", "table4"))
    grad = t1.cell("mnist", "input-gradient norm (training loss)", column="pdm")
    assert grad.text() == "3.5 ± 1, 3 seeds"  # 2.5, 3.5, 4.5
    assert _notes(t1, ("mnist", "input-gradient norm (training loss)"), "pdm") == [
        "differentiates RCE"
    ]
    assert t1.cell("mnist", "input-gradient norm (CE)", column="pdm").text() == "6 ± 1, 3 seeds"
    assert t1.cell("mnist", "input-gradient norm (CE)", column="ce").reason == "not logged"
    # a median breach distortion beyond the budget is said so, not "nan"
    median = t3.cell("mnist", "median breach distortion", column="rce")
    assert math.isnan(median.value) and median.text() == "> max budget"
    pdm_median = t3.cell("mnist", "median breach distortion", column="pdm")
    assert pdm_median.ours() == "> max budget"
    assert _notes(t3, ("mnist", "median breach distortion"), "pdm") == [
        "median breach distortion: > max budget in 1 of 3 seeds"
    ]
    assert t3.cell("mnist", "distortion", column="rce").text() == "0.1 [0.09, 0.11] (0.104)"
    # a single run whose interval's upper end is beyond the budget (seed 2 alone logged bounds)
    run = RunRecord("r", "r", "1", "FINISHED", 0, 1, metrics=PDM_SEEDS["2"])
    estimate = run_estimate(run, "whitebox/cw_wb/median_distortion")
    assert Cell.of(estimate, kind="breach").text() == "0.16 [0.12, > max budget]"
    assert t4.cell("mnist", "proxy success rate", column="rce").value == 0.8
    # a rate over no trials (0/0, e.g. no transfer candidate) says so, not "nan"
    assert Cell(float("nan"), kind="rate").text() == "n/a (0 examples)"


def test_ratio_table_pairs_runs_by_seed(seeds_report):
    ratio = seeds_report.table("whitebox_ratio")
    assert ratio.columns == ["dataset", "metric", "pdm/ce", "pdm/rce"]
    ce = ratio.cell("mnist", "mean distortion", column="pdm/ce")
    # seeds 0-2 pair up (CE's seed 3 has no PDM partner): 0.16/0.08, 0.15/0.10, 0.18/0.09
    # = 2.0, 1.5, 2.0: mean 1.8333, sd 0.288675, t_{0.975,2} = 4.302653,
    # half width 4.302653 * 0.288675 / sqrt(3) = 0.717109
    assert ce.value == pytest.approx(1.833333, abs=1e-6)
    assert (ce.ci_low, ce.ci_high) == (
        pytest.approx(1.116224, abs=1e-5),
        pytest.approx(2.550442, abs=1e-5),
    )
    assert ce.n_seeds == 3
    assert ce.text() == "1.83x [1.12x, 2.55x], 3 seed pairs (1.86x)"  # paper 0.162 / 0.087
    rce = ratio.cell("mnist", "mean distortion", column="pdm/rce")
    assert rce.value == pytest.approx(1.6) and rce.ci_low is None  # 0.16 / 0.1, seed 0 only
    assert rce.text() == "1.60x (1.56x)" and rce.notes == (ONE_PAIR_NOTE,)
    median = ratio.cell("mnist", "median breach distortion", column="pdm/ce")
    # seed 1 is NaN for PDM: seeds 0 and 2 give 0.14/0.07 = 2.0 and 0.16/0.10 = 1.6;
    # mean 1.8, sd 0.282843, t_{0.975,1} = 12.706205, half width 12.706205 * 0.2 = 2.541241
    assert median.value == pytest.approx(1.8) and median.n_seeds == 2
    assert (median.ci_low, median.ci_high) == (
        pytest.approx(-0.741241, abs=1e-5),
        pytest.approx(4.341241, abs=1e-5),
    )
    assert median.reference is None
    assert ratio.cell("mnist", "median breach distortion", column="pdm/rce").value is None


def test_success_curve_counts_breaches_within_the_budget():
    distortions = [0.1, None, 0.3, 0.2]
    assert success_curve(distortions, [0.0, 0.1, 0.25, 1.0]) == [0.0, 0.25, 0.5, 0.75]
    assert success_curve([None, None], [10.0]) == [0.0]
    assert all(math.isnan(v) for v in success_curve([], [0.1, 0.2]))


def test_budget_curve_figure_is_written_and_embedded(seeds_report, tmp_path):
    path = seeds_report.files["whitebox_budget_mnist.png"]
    assert path.name == "whitebox_budget_mnist.png" and path.parent == (
        seeds_report.files["report.md"].parent
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (figure,) = seeds_report.budget_figures
    # PDM pools its seeds with the artifact (0 and 1); the other columns logged none
    assert figure.curves == {"PDM": CURVES["0"] + CURVES["1"]}
    assert "pools the examples of all its seeds" in figure.caption
    assert "](whitebox_budget_mnist.png)" in seeds_report.files["report.md"].read_text()
    page = seeds_report.files["report.html"].read_text()
    assert '<img alt="whitebox_budget_mnist.png" src="data:image/png;base64,' in page


def test_no_budget_figure_without_the_artifact(report):
    assert not any(name.startswith("whitebox_budget") for name in report.files)
    assert report.budget_figures == []
