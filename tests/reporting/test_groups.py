"""Scope (the latest experiment by default) and fingerprint columns (a cell never mixes groups)."""

from __future__ import annotations

import csv

import pytest

from robustctl.reporting import build_report, build_tables, collect_runs
from robustctl.reporting.collect import RunRecord, fallback_fingerprint
from robustctl.reporting.groups import SPLIT, latest_parent, scope_runs


def _record(run_id: str, start: int, **tags: str) -> RunRecord:
    return RunRecord(run_id, run_id, "1", "FINISHED", start, start + 1, tags=tags)


# ------------------------------------------------------------------------------- scope
def test_default_report_covers_only_the_latest_parents_children(store, tmp_path):
    report = build_report(store.uri, experiment="scoped", out_dir=tmp_path, figures=False)
    t1 = report.table("table1")
    ce = t1.cell("mnist", "clean accuracy (%)", column="ce")
    assert (ce.value, ce.run_ids) == (0.90, (store.ids["b_ce"],))
    assert t1.cell("mnist", "clean accuracy (%)", column="pdm").value == 0.91
    # parent A's RCE child is out of scope
    assert t1.cell("mnist", "clean accuracy (%)", column="rce").reason == "not run"
    assert {r.run_id for r in report.runs} == {store.ids["b_ce"], store.ids["b_pdm"]}
    assert report.scope.parent.run_id == store.ids["parent_b"]
    for needle in (store.ids["parent_b"], "experiment-paper_b", "'paper_b'"):
        assert needle in report.subtitle
    assert store.ids["parent_a"] not in report.subtitle
    assert store.ids["parent_b"] in (tmp_path / "report.md").read_text()


def test_all_runs_covers_both_experiments(store, tmp_path):
    report = build_report(
        store.uri, experiment="scoped", out_dir=tmp_path, figures=False, all_runs=True
    )
    t1 = report.table("table1")
    rce = t1.cell("mnist", "clean accuracy (%)", column="rce")
    assert (rce.value, rce.run_ids) == (0.80, (store.ids["a_rce"],))
    # same (fallback) fingerprint and seed: the latest finished run of the two CE children
    assert t1.cell("mnist", "clean accuracy (%)", column="ce").run_ids == (store.ids["b_ce"],)
    assert store.ids["a_ce"] in {r.run_id for r in report.runs}
    assert "--all" in report.subtitle and report.scope.parent is None


def test_explicit_parent_reports_that_parents_children(store, tmp_path):
    report = build_report(
        store.uri, parent_run_id=store.ids["parent_a"], out_dir=tmp_path, figures=False
    )
    assert {r.run_id for r in report.runs} == {store.ids["a_rce"], store.ids["a_ce"]}
    assert "experiment-paper_a" in report.subtitle and store.ids["parent_a"] in report.subtitle


def test_without_a_parent_run_every_run_is_reported_and_the_subtitle_says_so():
    runs = [_record("x", 1), _record("y", 2)]
    scope = scope_runs(runs)
    assert scope.records == runs and scope.parent is None
    assert "no parent run" in scope.description
    # the parent named by children that started last wins, not the last child
    tree = [
        _record("p1", 1),
        _record("c1", 2, **{"mlflow.parentRunId": "p1"}),
        _record("p2", 3),
        _record("c2", 4, **{"mlflow.parentRunId": "p2"}),
        _record("c1_late", 9, **{"mlflow.parentRunId": "p1"}),
        _record("lonely", 10),
    ]
    assert latest_parent(tree).run_id == "p2"
    assert [r.run_id for r in scope_runs(tree).records] == ["c2"]


# ------------------------------------------------------------------------------- fingerprints
@pytest.fixture(scope="module")
def fp_tables(store):
    return {t.key: t for t in build_tables(collect_runs(store.uri, experiment="fingerprints"))}


A, B, C = "pdm [fp aaaaaa]", "pdm [fp bbbbbb]", "pdm (rvl_normalization=centroid)"


def test_two_fingerprints_of_one_loss_are_two_labelled_columns(fp_tables):
    t1 = fp_tables["table1"]
    assert t1.columns == ["dataset", "metric", "ce", "rce", "siamese_rvl", "pdm", A, B, C]
    assert [t1.header(k) for k in (A, B, C)] == [
        "PDM [fp aaaaaa]",
        "PDM [fp bbbbbb]",
        "PDM (rvl_normalization=centroid)",
    ]
    assert t1.cell("mnist", "clean accuracy (%)", column=A).value == 0.99
    assert t1.cell("mnist", "clean accuracy (%)", column=B).value == 0.995
    assert t1.cell("mnist", "clean accuracy (%)", column=C).value == 0.97
    # the plain column says where its runs went instead of "not run"
    assert t1.cell("mnist", "clean accuracy (%)", column="pdm").reason == SPLIT


def test_table2_rows_of_a_column_come_from_its_group_only(fp_tables, store):
    t2 = fp_tables["table2"]
    assert t2.cell("mnist", "fgsm-0.05", column=A).value == 0.95
    assert t2.cell("mnist", "fgsm-0.05", column=B).value == 0.60
    # group B never ran bim-0.1: the newer run does not borrow group A's number, nor hide it
    b_bim = t2.cell("mnist", "bim-0.1", column=B)
    assert b_bim.value is None and b_bim.reason == "not run"
    assert t2.cell("mnist", "bim-0.1", column=A).value == 0.97
    for table in fp_tables.values():
        index = table.columns.index(A) if A in table.columns else None
        for row in table.rows:
            if index is not None:
                assert set(row[index].run_ids) <= {store.ids["fp_a"]}
    t3 = fp_tables["table3"]
    assert t3.cell("mnist", "distortion", column=A).value == 0.15
    assert t3.cell("mnist", "distortion", column=B).reason == "not run"


def test_old_runs_without_fingerprint_group_by_their_params(fp_tables):
    base = {"dataset.name": "mnist", "loss.name": "ce", "trainer.epochs": "5"}
    same = fallback_fingerprint(base | {"trainer.seed": "0", "trainer.device": "cpu"})
    assert same == fallback_fingerprint(
        base
        | {
            "trainer.seed": "7",
            "trainer.device": "cuda",
            "tracking.uri": "x",
            "evaluate.checkpoint": "y",
            "threat_model.batch_size": "64",
            "work_dir": "/w",
        }
    )
    assert same != fallback_fingerprint(base | {"trainer.epochs": "6"})
    assert same != fallback_fingerprint(base | {"threat_model.num_samples": "100"})
    # the two old CE runs (seeds 0 and 1, cpu vs cuda) are one column: mean ± sd of 90 and 92
    acc = fp_tables["table1"].cell("mnist", "clean accuracy (%)", column="ce")
    assert acc.n_seeds == 2 and acc.text() == "91.00 ± 1.41, 2 seeds (99.33)"


def test_columns_section_lists_runs_and_settings(store, tmp_path):
    report = build_report(store.uri, experiment="fingerprints", out_dir=tmp_path, figures=False)
    with (tmp_path / "columns.csv").open() as handle:
        rows = {r["column"]: r for r in csv.DictReader(handle)}
    a = rows[A]
    assert (a["dataset"], a["label"], a["fingerprint"]) == (
        "mnist",
        "PDM [fp aaaaaa]",
        "aaaaaa111111",
    )
    assert (a["n_seeds"], a["seeds"], a["run_ids"]) == ("1", "0", store.ids["fp_a"])
    assert (a["model"], a["epochs"], a["num_samples"]) == ("resnet20", "10", "500")
    assert a["white-box budget"] == "C&W-wb 5 x 20 @ 0.01"
    assert a["black-box proxy"] == "resnet32, 10 epochs"
    assert rows[B]["epochs"] == "20" and rows[C]["variant"] == "rvl_normalization=centroid"
    ce = rows["ce"]
    assert ce["n_seeds"] == "2" and ce["seeds"] == "0;1"
    assert set(ce["run_ids"].split(";")) == {store.ids["old_ce_0"], store.ids["old_ce_1"]}
    md = (tmp_path / "report.md").read_text()
    assert md.index("## Columns") < md.index("## Table 1")
    assert "**mnist / PDM [fp aaaaaa]**: fingerprint `aaaaaa111111`, 1 seed (0)" in md
    page = (tmp_path / "report.html").read_text()
    assert "Columns: runs and settings" in page and "5 x 20 @ 0.01" in page
    assert [i.key for i in report.columns] == ["ce", A, B, C]


def test_columns_section_fits_an_80_column_terminal(store, tmp_path):
    """The terminal's Columns table keeps fingerprints and settings readable at 80 columns (the
    14 CSV fields side by side were cut to one or two characters each)."""
    import io

    from rich.console import Console

    from robustctl.reporting.render import rich_columns, rich_table

    report = build_report(store.uri, experiment="fingerprints", out_dir=tmp_path, figures=False)
    buffer = io.StringIO()
    Console(file=buffer, width=80, no_color=True).print(rich_columns(report.columns))
    text = buffer.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 80
    assert "…" not in text
    # each cell folds inside its own column: the fingerprint and the budget stay whole
    ce = next(i for i in report.columns if i.key == "ce")  # old runs: a fallback fingerprint
    assert "aaaaaa111111 (1 seed: 0)" in text and f"{ce.fingerprint} (2 seeds:" in text
    assert "mnist / PDM [fp aaaaaa]" in text  # the label is text, not rich markup
    # the tables' headers too
    buffer = io.StringIO()
    Console(file=buffer, width=200, no_color=True).print(rich_table(report.table("table1")))
    assert "PDM [fp aaaaaa]" in buffer.getvalue()
