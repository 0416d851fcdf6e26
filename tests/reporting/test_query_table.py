"""The query-based black-box table: one row per attack and metric, each model's cells from its
own run, and the table only in a report whose runs ran the query-based black box."""

from __future__ import annotations

import pytest

from robustctl import metric_keys as keys
from robustctl.reporting.tables import build_tables, table4q
from tests.reporting.test_taxonomy import baseline, record


def bk(attack: str, metric: str) -> str:
    return keys.attack_key(keys.BLACKBOX, attack, metric)


def queried(i: int, loss: str, square: float, hsj_median: float) -> object:
    metrics = {
        keys.BLACKBOX_SYSTEM_THRESHOLD: 4.0,
        bk("square", keys.SUCCESS_RATE): square,
        bk("square", keys.SUCCESS_RATE) + "_ci_low": square - 0.1,
        bk("square", keys.SUCCESS_RATE) + "_ci_high": square + 0.1,
        bk("square", keys.QUERIES_PER_SUCCESS): 123.4,
        bk("square", keys.REJECTED_QUERY_RATE): 0.25,
        bk("hsj", keys.SUCCESS_RATE): 1.0,
        bk("hsj", keys.MEDIAN_DISTORTION): hsj_median,
        bk("hsj", keys.QUERIES_PER_SUCCESS): 1500.0,
        bk("hsj", keys.REJECTED_QUERY_RATE): 0.4,
    }
    return record(i, loss, "", metrics)


def test_each_model_reads_its_own_run():
    table = table4q([queried(1, "ce", 0.6, 0.12), queried(2, "pdm", 0.3, 0.2)])
    labels = [row[1] for row in table.rows]
    assert labels[:3] == [
        "square: success rate",
        "square: queries per success",
        "square: rejected queries",
    ]
    assert "hsj: median distortion" in labels
    cells = {
        (row[1], column): cell.value
        for row in table.rows
        for column, cell in zip(table.columns[2:], row[2:], strict=True)
    }
    ce, pdm = "ce", "pdm"  # the paper's columns; RCE's and Siamese+RVL's are "not run"
    assert cells[("square: success rate", "rce")] is None
    assert cells[("square: success rate", ce)] == pytest.approx(0.6)
    assert cells[("square: success rate", pdm)] == pytest.approx(0.3)
    assert cells[("hsj: median distortion", pdm)] == pytest.approx(0.2)
    assert cells[("hsj: queries per success", ce)] == pytest.approx(1500.0)
    assert cells[("square: detection AUC", ce)] is None  # not logged: a gap, not a number


def test_the_table_is_in_the_report_only_when_a_run_queried():
    assert "table4q" not in [t.key for t in build_tables([baseline(1)])]
    assert "table4q" in [t.key for t in build_tables([baseline(1), queried(2, "pdm", 0.3, 0.2)])]
