"""Table 5: detectors x losses. Columns of other detectors than KDE are labelled with theirs in
Tables 1-4; Table 5 lays the detectors out as rows, one loss per column, each cell read from the
(loss, detector) group's own runs."""

from __future__ import annotations

import pytest

from robustctl.reporting.cells import layout_of
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.tables import build_tables, table5


def record(i: int, loss: str, defense: str, metrics: dict[str, float]) -> RunRecord:
    tags = {
        "dataset": "digits",
        "loss": loss,
        "defense": defense,
        "fingerprint": f"{loss}-{defense}",
        "seed": "0",
        "command": "run",
    }
    return RunRecord(f"r{i}", f"r{i}", "1", "FINISHED", 1000 * i, 1000 * i + 1, tags, {}, metrics)


def detector_runs() -> list[RunRecord]:
    runs = []
    for i, (loss, defense, gray, wb) in enumerate(
        [
            ("ce", "kde", 0.81, 0.40),
            ("pdm", "kde", 0.93, 0.45),
            ("ce", "lid", 0.77, 0.61),
            ("pdm", "lid", 0.88, 0.52),
        ]
    ):
        metrics = {
            "graybox/fgsm-0.1/auc": gray,
            "graybox/fgsm-0.1/pairs": 40.0,
            "whitebox/cw_wb/auc": wb,
            "whitebox/cw_wb/pairs": 50.0,
            "whitebox/cw_wb/success_rate": 1.0,
            "whitebox/cw_wb/distortion": 0.1 + i / 100,
        }
        runs.append(record(i, loss, defense, metrics))
    return runs


def test_each_detector_is_a_block_of_rows_and_each_loss_a_column():
    table = table5(detector_runs())
    assert table.losses == ["ce", "pdm"]
    labels = [row[1] for row in table.rows]
    assert labels[:2] == ["kde: gray-box fgsm-0.1 AUC", "kde: white-box distortion"]
    assert "lid: gray-box fgsm-0.1 AUC" in labels and "lid: white-box detection AUC" in labels
    assert table.cell("digits", "lid: gray-box fgsm-0.1 AUC", column="pdm").value == 0.88
    assert table.cell("digits", "lid: white-box detection AUC", column="ce").value == 0.61
    assert table.cell("digits", "kde: white-box detection AUC", column="pdm").value == 0.45
    lid_ce = table.cell("digits", "lid: white-box distortion", column="ce")
    assert lid_ce.value == pytest.approx(0.12) and lid_ce.run_ids == ("r2",)
    # no paper reference beside a detector the paper did not use
    assert all(c.reference is None for c in table.cells())


def test_the_paper_tables_label_other_detectors_and_table5_appears_only_then():
    runs = detector_runs()
    tables = {t.key: t for t in build_tables(runs)}
    assert "table5" in tables
    assert {"ce", "pdm", "ce · lid", "pdm · lid"} <= set(tables["table2"].losses)
    assert layout_of(runs).headers["pdm · lid"] == "PDM · lid"
    kde_only = [r for r in runs if r.defense == "kde"]
    assert "table5" not in {t.key for t in build_tables(kde_only)}
