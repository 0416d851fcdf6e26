"""Tables 1-4 built from the store: values are the stored metrics, with the paper's beside them."""

from __future__ import annotations

import math

import pytest
from mlflow.tracking import MlflowClient

from robustctl.reporting import build_tables, collect_runs
from tests.reporting.conftest import BB_REASON, MNIST_CE, ROC_REASON, WB_NOTE


@pytest.fixture(scope="module")
def tables(store):
    return {t.key: t for t in build_tables(collect_runs(store.uri, experiment="robustctl"))}


def test_every_value_is_the_metric_stored_in_its_run(tables, store):
    client = MlflowClient(store.uri)
    checked = 0
    for table in tables.values():
        for cell in table.cells():
            if cell.value is not None:
                assert cell.value == client.get_run(cell.run_id).data.metrics[cell.key]
                checked += 1
    assert checked == 9 + 2 + 3 + 1  # tables 1-4


def test_mnist_ce_column_is_the_latest_finished_run_that_logged_it(tables, store):
    t1, t2, t3, t4 = (tables[k] for k in ("table1", "table2", "table3", "table4"))
    acc = t1.cell("mnist", "clean accuracy (%)", column="ce")
    # not the older 0.5 run, not the newer train-only run
    assert (acc.value, acc.run_id) == (0.9871, store.ids["mnist_ce"])
    assert t1.cell("mnist", "DBI (embeddings)", column="ce").value == MNIST_CE["embed/dbi"]
    assert t2.cell("mnist", "fgsm-0.05", column="ce").value == MNIST_CE["graybox/fgsm-0.05/auc"]
    assert (
        t3.cell("mnist", "distortion", column="ce").value == MNIST_CE["whitebox/cw_wb/distortion"]
    )
    assert t3.cell("mnist", "detection AUC", column="ce").value == MNIST_CE["whitebox/cw_wb/auc"]
    assert (
        t4.cell("mnist", "transfer rate", column="ce").value
        == MNIST_CE["blackbox/cw_wb/transfer_rate"]
    )
    # a newer FAILED run does not hide an older finished result
    rce = t1.cell("cifar10", "clean accuracy (%)", column="rce")
    assert (rce.value, rce.run_id) == (0.91, store.ids["cifar_rce"])


def test_reference_numbers_sit_beside_ours_for_mnist_and_cifar10_only(tables):
    t1 = tables["table1"]
    acc = t1.cell("mnist", "clean accuracy (%)", column="ce")
    assert acc.reference == 0.9933 and acc.text() == "98.71 (99.33)"
    assert t1.cell("cifar10", "clean accuracy (%)", column="siamese_rvl").text() == "94.02 (94.37)"
    assert t1.cell("cifar10", "DBI (embeddings)", column="siamese_rvl").text() == "0.250 (0.230)"
    # an AUC cell carries its pair count (no interval logged by this old-style run)
    assert tables["table2"].cell("mnist", "fgsm-0.05", column="ce").text() == "0.913, n=40 (0.981)"
    assert (
        tables["table3"]
        .cell("mnist", "distortion", column="ce")
        .text()
        .startswith("0.0712 (0.087)")
    )
    assert tables["table2"].cell("mnist", "fgsm-0.1", column="rce").text() == "not run; paper 0.990"
    fashion = t1.cell("fashion_mnist", "clean accuracy (%)", column="ce")
    assert fashion.reference is None and fashion.text() == "90.00"


def test_failed_run_gives_its_error_instead_of_a_number(tables):
    for key, labels in [
        ("table1", ("mnist", "clean accuracy (%)")),
        ("table2", ("mnist", "jsma")),
        ("table3", ("mnist", "distortion")),
        ("table4", ("mnist", "detection AUC")),
    ]:
        cell = tables[key].cell(*labels, column="pdm")
        assert cell.value is None and cell.failed
        assert cell.reason == "failed: TrainingDiverged: loss became nan at step 12 | <bad>"
        assert cell.reference is not None  # the paper's number is still shown


def test_missing_auc_shows_the_reason_the_run_logged(tables):
    cw = tables["table2"].cell("mnist", "cw", column="ce")
    assert cw.value is None and not cw.failed and cw.reason == ROC_REASON and cw.reference == 0.994
    # a long reason shows its head in the cell and the whole text as a footnote
    assert cw.text() == "too few pairs for an AUC; paper 0.994"
    t2 = tables["table2"]
    marks2, notes2 = t2.footnotes()
    cw_row = next(i for i, row in enumerate(t2.rows) if row[:2] == ["mnist", "cw"])
    assert [notes2[m - 1] for m in marks2[(cw_row, t2.columns.index("ce"))]] == [ROC_REASON]
    assert tables["table4"].cell("mnist", "detection AUC", column="ce").reason == BB_REASON
    # a white-box AUC that exists but missed the attack's goal carries the budget note as a footnote
    t3 = tables["table3"]
    assert t3.cell("mnist", "detection AUC", column="ce").note == WB_NOTE
    marks, notes = t3.footnotes()
    assert WB_NOTE in notes and sum(1 for m in marks.values() if notes[m[0] - 1] == WB_NOTE) == 2
    assert all(n == WB_NOTE or n.startswith("failed:") for n in notes)


def test_columns_rows_and_extra_losses(tables):
    t1, t2 = tables["table1"], tables["table2"]
    assert t1.columns == ["dataset", "metric", "ce", "rce", "siamese_rvl", "pdm", "center"]
    assert [r[0] for r in t1.rows] == 4 * ["mnist"] + 4 * ["cifar10"] + 4 * ["fashion_mnist"]
    assert t1.cell("mnist", "clean accuracy (%)", column="center").value == 0.98
    assert t1.cell("mnist", "DBI (embeddings)", column="center").reason == "not logged"
    attacks = [r[1] for r in t2.rows if r[0] == "mnist"]
    assert attacks == ["fgsm-0.05", "fgsm-0.1", "bim-0.05", "bim-0.1", "cw", "cw_hc", "jsma", "pgd"]
    assert t2.cell("mnist", "pgd", column="ce").value == 0.77
    # a dataset without reference numbers and without any gray-box run has no Table 2 rows
    assert not [r for r in t2.rows if r[0] == "fashion_mnist"]
    assert t1.cell("cifar10", "clean accuracy (%)", column="pdm").reason == "not run"


def test_nan_values_render_as_nan():
    from robustctl.reporting.cells import Cell

    assert Cell(math.nan, 0.5, kind="auc").text() == "nan (0.500)"
    assert Cell(math.nan, 0.5, kind="rate").text() == "n/a (0 examples) (0.500)"  # 0/0
