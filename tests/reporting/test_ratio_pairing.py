"""The white-box ratio table pairs each PDM column with the CE / RCE column attacked with the same
threat-model settings (a sweep over the white-box starts and targets gives one row per pair)."""

from __future__ import annotations

from robustctl.reporting.collect import RunRecord
from robustctl.reporting.groups import Column
from robustctl.reporting.ratios import base_column, settings_label


def column(loss: str, start: str, toward: str = "runner_up", fp: str = "") -> Column:
    params = {
        "threat_model.whitebox.start": start,
        "threat_model.whitebox.toward": toward,
        "threat_model.num_samples": "60",
        "trainer.epochs": "30",
    }
    run = RunRecord(f"{loss}-{start}-{toward}", "r", "1", "FINISHED", 0, 1, params=params)
    return Column("digits", loss, "", fp or f"{loss}{start}{toward}", [run])


def test_each_pdm_column_is_divided_by_the_baseline_attacked_the_same_way():
    ce_clean, ce_other = column("ce", "clean"), column("ce", "other_class")
    pdm_clean, pdm_other = column("pdm", "clean"), column("pdm", "other_class")
    columns = [ce_clean, ce_other, pdm_clean, pdm_other]
    # the first CE column would be ce_clean for both: the other_class PDM column needs ce_other
    assert base_column(columns, "ce", pdm_other) is ce_other
    assert base_column(columns, "ce", pdm_clean) is ce_clean
    # no RCE column at all: not run; an RCE column attacked otherwise: a reason, never a mismatch
    assert base_column(columns, "rce", pdm_other) is None
    rce = column("rce", "clean", "every_class")
    assert base_column([*columns, rce], "rce", pdm_clean) == (
        "no rce run with these threat_model settings"
    )


def test_rows_name_the_settings_in_which_the_pdm_columns_differ():
    pdms = [column("pdm", "clean"), column("pdm", "other_class", "every_class")]
    assert settings_label(pdms[1], pdms) == "start=other_class, toward=every_class"
    assert settings_label(pdms[0], pdms) == "start=clean, toward=runner_up"
    assert settings_label(pdms[0], pdms[:1]) == ""


def test_a_run_without_the_params_agrees_with_any_setting():
    old = Column("digits", "ce", "", "old", [RunRecord("o", "o", "1", "FINISHED", 0, 1)])
    pdm = column("pdm", "other_class")
    assert base_column([old], "ce", pdm) is old
