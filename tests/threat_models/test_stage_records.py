"""A threat-model stage is one record: registering one makes it a valid ``threat_model.stages``
entry, runs it, refuses ``defense=none`` when it attacks the detector, and shows its rows in the
end-of-command summary and on the run page, with no other code naming it."""

from __future__ import annotations

import dataclasses

import pytest
from rich.console import Console

from robustctl import metric_keys as keys
from robustctl.commands import preflight
from robustctl.composition import compose
from robustctl.errors import ConfigError
from robustctl.evaluation.result import StageResult
from robustctl.summary import stage_table
from robustctl.threat_models import STAGES, Stage
from robustctl.threat_models.schema import ThreatModelConfig
from robustctl.threat_models.stage import Column, Rows
from robustctl.tracking.description import run_description

PROBE_METRICS = {
    "probe/noise/success_rate": 0.25,
    "probe/noise/auc": 0.75,
    "probe/noise/pairs": 12.0,
    "probe/other/success_rate": 0.5,
}


@pytest.fixture
def probe_stage(monkeypatch):
    stage = Stage(
        name="probe",
        run=lambda ctx: StageResult(metrics=dict(PROBE_METRICS)),
        needs_detector=True,
        title="Probe stage",
        summary=Rows("attack", (Column("success", keys.SUCCESS_RATE),)),
        description=Rows("probe attack", (Column("success rate", keys.SUCCESS_RATE),)),
    )
    monkeypatch.setitem(STAGES, "probe", stage)
    monkeypatch.setattr(keys, "STAGES", (*keys.STAGES, "probe"))
    return stage


def test_every_registered_stage_names_its_metric_keys_family():
    assert list(STAGES) == list(keys.STAGES)
    for name, stage in STAGES.items():
        assert stage.name == name and callable(stage.run)
        assert stage.settings is None or hasattr(ThreatModelConfig(), stage.settings)


def test_a_registered_stage_is_a_valid_choice_and_an_unknown_one_is_refused(probe_stage):
    assert ThreatModelConfig(stages=["probe"]).stages == ["probe"]
    with pytest.raises(ConfigError, match="graybox, whitebox, blackbox, robust, probe"):
        ThreatModelConfig(stages=["nope"])


def test_preflight_reads_whether_the_stage_attacks_the_detector(probe_stage, monkeypatch):
    _, cfg = compose(["threat_model=graybox", "defense=none"])
    cfg = dataclasses.replace(
        cfg, threat_model=dataclasses.replace(cfg.threat_model, stages=["probe"])
    )
    with pytest.raises(ConfigError, match="stage\\(s\\) probe attack a detector"):
        preflight("run", cfg)
    monkeypatch.setitem(STAGES, "probe", dataclasses.replace(probe_stage, needs_detector=False))
    preflight("run", cfg)  # no detector needed: accepted


def test_the_summary_and_the_description_show_the_stages_rows(probe_stage):
    lines = run_description("t", PROBE_METRICS).splitlines()
    assert "| probe attack | success rate | detection AUC | pairs |" in lines
    assert "| noise | 0.2500 | 0.750 | 12 |" in lines
    assert "| other | 0.5000 | — | — |" in lines
    console = Console(width=120, record=True)
    console.print(stage_table(probe_stage, PROBE_METRICS))
    text = console.export_text()
    assert "Probe stage" in text and "0.2500" in text and "0.750 (12)" in text
