"""The robust-accuracy table (one row per model, RobustBench's column order, rejection columns
only when a run had a detector, a raised flag as the footnote, intervals and the seed mean) and
the attack-cost table (seconds beside forwards and gradients per example), from hand-made runs."""

from __future__ import annotations

import math

import pytest

from robustctl import metric_keys as keys
from robustctl.reporting.robust_table import cost_table, robust_table
from robustctl.reporting.tables import build_tables
from tests.reporting.test_taxonomy import baseline, record

PGD = "train_defense=pgd_at(eps=0.1, steps=7)"


def rk(attack: str, metric: str) -> str:
    return keys.attack_key(keys.ROBUST, attack, metric)


def robust_metrics(clean, robust, after_apgd, square_q, detector=None):
    m = {
        rk("ensemble", "clean_accuracy"): clean,
        rk("ensemble", "robust_accuracy"): robust,
        rk("ensemble", "robust_accuracy") + "_ci_low": robust - 0.1,
        rk("ensemble", "robust_accuracy") + "_ci_high": robust + 0.05,
        rk("apgd-ce", "robust_accuracy"): after_apgd,
        rk("apgd-ce", "passes_per_point"): 101.0,
        rk("square", "robust_accuracy"): robust,
        rk("square", "queries_per_point"): square_q,
        rk("square", "passes_per_point"): 0.0,
    }
    if detector:
        clean_d, blind, adaptive = detector
        m |= {
            rk("with-detector", "clean_accuracy"): clean_d,
            rk("detector-blind", "robust_accuracy"): blind,
            rk("apgd-wb", "robust_accuracy"): adaptive,
            rk("apgd-wb", "passes_per_point"): 31.0,
        }
    return m


def runs():
    ce = [
        record(1 + s, "ce", "", robust_metrics(0.98, r, 0.3, 400.0), seed=str(s), defense="none")
        for s, r in enumerate([0.20, 0.30])
    ]
    pgd = record(3, "ce", PGD, robust_metrics(0.95, 0.8, 0.85, 900.0), defense="none")
    pgd.tags[keys.note_tag(keys.ROBUST, keys.ENSEMBLE)] = "flag zero_gradients: 3 points"
    pdm = record(4, "pdm", "", robust_metrics(0.97, 0.1, 0.2, 100.0, (0.92, 0.5, 0.05)))
    return [*ce, pgd, pdm]


def test_one_row_per_model_in_robustbench_order_with_rejection_columns():
    table = robust_table(runs())
    assert [row[1] for row in table.rows] == ["CE (baseline)", f"CE ({PGD})", "PDM"]
    headers = [table.header(c) for c in table.columns[2:]]
    assert headers == [
        "clean (%)",
        "robust (%)",
        "after apgd-ce (%)",
        "apgd-ce passes/pt",
        "after square (%)",
        "square queries/pt",
        "with detector: clean (%)",
        "with detector: blind attack (%)",
        "with detector: adaptive attack (%)",
        "apgd-wb passes/pt",
    ]
    ce = table.rows[0]
    robust = table.cell("digits", ce[1], column=rk("ensemble", "robust_accuracy"))
    assert robust.value == pytest.approx(0.25) and robust.n_seeds == 2
    assert robust.sd == pytest.approx(math.sqrt(0.005))  # values 0.2, 0.3
    pgd = table.cell("digits", table.rows[1][1], column=rk("ensemble", "robust_accuracy"))
    assert (pgd.ci_low, pgd.ci_high) == (pytest.approx(0.7), pytest.approx(0.85))
    assert pgd.notes == ("flag zero_gradients: 3 points",)
    square = table.cell("digits", table.rows[1][1], column=rk("square", "queries_per_point"))
    assert square.value == 900.0
    pdm = table.rows[2][1]
    assert table.cell("digits", pdm, column=rk("apgd-wb", "robust_accuracy")).value == 0.05
    # a model run without a detector has no rejection numbers
    assert table.cell("digits", ce[1], column=rk("apgd-wb", "robust_accuracy")).value is None


def test_no_detector_no_rejection_columns_and_no_robust_run_no_table():
    table = robust_table(runs()[:3])
    assert rk("apgd-wb", "robust_accuracy") not in table.columns
    assert robust_table([baseline()]).rows == []
    titles = [t.key for t in build_tables([baseline()])]
    assert "table_robust" not in titles and "table_cost" not in titles
    assert "table_robust" in [t.key for t in build_tables(runs())]


def test_the_cost_table_puts_seconds_beside_forwards_and_gradients():
    fgsm = "graybox/fgsm-0.1/"
    costs = [
        record(
            1,
            "ce",
            "",
            {
                fgsm + "seconds": 2.0,
                fgsm + "forwards_per_example": 2.0,
                fgsm + "backwards_per_example": 1.0,
            },
        ),
        record(
            2,
            "pdm",
            "",
            {
                fgsm + "seconds": 3.0,
                fgsm + "forwards_per_example": 2.0,
                fgsm + "backwards_per_example": 1.0,
            },
        ),
    ]
    table = cost_table(costs)
    assert [row[1] for row in table.rows] == [
        "graybox fgsm-0.1: seconds",
        "graybox fgsm-0.1: forwards/example",
        "graybox fgsm-0.1: gradients/example",
    ]
    label = "graybox fgsm-0.1: seconds"
    assert table.cell("digits", label, column="ce").value == 2.0
    assert table.cell("digits", label, column="pdm").value == 3.0
    assert table.cell("digits", label, column="rce").value is None  # not run
    assert cost_table([baseline()]).rows == []  # no attack logged its cost
