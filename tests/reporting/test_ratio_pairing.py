"""The white-box ratio table pairs each PDM column with the CE / RCE column attacked with the same
threat-model settings (a sweep over the white-box starts and targets gives one row per pair)."""

from __future__ import annotations

import pytest

from robustctl.reporting.cells import as_layout
from robustctl.reporting.collect import RunRecord
from robustctl.reporting.columns import _proxy, _whitebox_budget
from robustctl.reporting.groups import Column
from robustctl.reporting.ratios import base_column, ratio_table, settings_label
from robustctl.reporting.tables import table3


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


def fmn_only_run(i: int, loss: str, seed: int, median: float) -> RunRecord:
    """A white-box run of FMN-wb alone (``threat_model.whitebox_attacks=[fmn_wb]``)."""
    tags = {
        "dataset": "fashion_mnist",
        "loss": loss,
        "defense": "kde",
        "fingerprint": loss,
        "seed": str(seed),
        "command": "run",
    }
    params = {
        "threat_model.stages": "['whitebox']",
        "threat_model.whitebox_attacks": "['fmn_wb']",
        "threat_model.fmn_wb.steps": "50",
        "threat_model.convergence.max_doublings": "3",
        "threat_model.whitebox.binary_steps": "3",
        "threat_model.whitebox.steps": "1000",
        "threat_model.whitebox.lr": "0.01",
        "threat_model.blackbox.proxy_model": "resnet32",
    }
    metrics = {"whitebox/fmn_wb/median_distortion": median, "whitebox/fmn_wb/success_rate": 1.0}
    return RunRecord(
        f"r{i}", f"r{i}", "1", "FINISHED", 1000 * i, 1000 * i + 1, tags, params, metrics
    )


def test_runs_of_fmn_wb_alone_fill_table3_and_the_ratio_table():
    """Runs without C&W-wb still give the FMN-wb rows (the C&W-wb rows stay empty), and their
    columns name the attack that ran, not C&W-wb's unused settings. Hand values: PDM / CE per
    seed 0.05 / 0.04 = 1.25 and 0.06 / 0.05 = 1.2, mean 1.225 over 2 pairs."""
    runs = [
        fmn_only_run(0, "ce", 0, 0.04),
        fmn_only_run(1, "ce", 1, 0.05),
        fmn_only_run(2, "pdm", 0, 0.05),
        fmn_only_run(3, "pdm", 1, 0.06),
    ]
    fmn_row = ("fashion_mnist", "median minimal distortion (FMN-wb)")
    ratio = ratio_table(as_layout(runs)).cell(*fmn_row, column="pdm/ce")
    assert ratio.value == pytest.approx(1.225) and ratio.n_seeds == 2
    assert table3(as_layout(runs)).cell(*fmn_row, column="pdm").value == pytest.approx(0.055)
    assert _whitebox_budget(runs[0]) == "FMN-wb 50 steps, ladder up to 8x"
    both = fmn_only_run(4, "ce", 2, 0.04)
    both.params["threat_model.whitebox_attacks"] = "['cw_wb', 'fmn_wb']"
    assert _whitebox_budget(both) == "C&W-wb 3 x 1000 @ 0.01, FMN-wb 50 steps, ladder up to 8x"
    both.params["threat_model.convergence.attack_max_doublings.fmn_wb"] = "6"
    assert _whitebox_budget(both) == (
        "C&W-wb 3 x 1000 @ 0.01 (ladder up to 8x), FMN-wb 50 steps (ladder up to 64x)"
    )
    assert _proxy(runs[0]) == ""  # the black-box stage did not run
