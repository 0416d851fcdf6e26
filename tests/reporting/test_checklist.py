"""The report's evaluation checklist: a check failed on any seed is failed (its numbers and the
seed in the footnote), passed where every seed that ran it passed, not checked with the reason;
a model without the check says so; no table without any check."""

from __future__ import annotations

from robustctl import metric_keys as keys
from robustctl.reporting.checklist import checklist_table
from robustctl.reporting.tables import build_tables
from tests.reporting.test_taxonomy import baseline, record

NOISE = keys.sanity_tag("attack_beats_noise")
CLAIM = keys.sanity_tag("detector_claim_plausible")


def checked(i, loss, seed, **tags):
    run = record(i, loss, "", {"clean/accuracy": 0.9}, seed=seed)
    run.tags.update(tags)
    return run


def runs():
    return [
        checked(1, "ce", "0", **{NOISE: "passed", CLAIM: "not checked: no reference"}),
        checked(2, "ce", "1", **{NOISE: "failed: fgsm-0.1 0.100 vs noise 0.200"}),
        checked(3, "pdm", "0", **{NOISE: "passed"}),
        checked(4, "pdm", "1", **{NOISE: "passed"}),
    ]


def test_one_row_per_check_and_the_worst_seed_decides():
    table = checklist_table(runs())
    assert [row[1] for row in table.rows] == ["attack_beats_noise", "detector_claim_plausible"]
    ce = table.cell("digits", "attack_beats_noise", column="ce")
    assert ce.reason == "failed: fgsm-0.1 0.100 vs noise 0.200 (seed 1 of 2 runs)"
    assert set(ce.run_ids) == {"r1", "r2"}
    assert table.cell("digits", "attack_beats_noise", column="pdm").reason == "passed"
    assert table.cell("digits", "detector_claim_plausible", column="ce").reason == (
        "not checked: no reference"
    )
    assert table.cell("digits", "detector_claim_plausible", column="pdm").reason == "not run"


def test_the_table_is_in_the_report_only_when_a_run_logged_a_check():
    assert "checklist" not in [t.key for t in build_tables([baseline(1)])]
    assert "checklist" in [t.key for t in build_tables(runs())]
