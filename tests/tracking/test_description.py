"""The run description's Markdown, checked against tables written out by hand."""

from __future__ import annotations

from robustctl.tracking.description import run_description


def test_every_stage_becomes_a_table_with_intervals_and_pair_counts():
    metrics = {
        "clean/accuracy": 0.98765,
        "graybox/fgsm-0.1/success_rate": 0.5,
        "graybox/fgsm-0.1/success_rate_ci_low": 0.25,
        "graybox/fgsm-0.1/success_rate_ci_high": 0.75,
        "graybox/fgsm-0.1/distortion": 0.1,
        "graybox/fgsm-0.1/auc": 0.91234,
        "graybox/fgsm-0.1/pairs": 40.0,
        "graybox/jsma/success_rate": 0.1,
        "graybox/jsma/pairs": 3.0,  # too few pairs: no AUC logged
        "whitebox/cw_wb/success_rate": 1.0,
        "whitebox/cw_wb/distortion": 0.25,
        "whitebox/cw_wb/auc": 0.5,
        "whitebox/cw_wb/pairs": 50.0,
        "whitebox/cw_wb/median_distortion": 0.24,
        "whitebox/cw_wb/converged": 1.0,
        "whitebox/fmn_wb/success_rate": 0.9,
        "whitebox/fmn_wb/distortion": 0.2,
        "whitebox/fmn_wb/converged": 0.0,
        "blackbox/cw_wb/transfer_rate": float("nan"),  # no candidates: 0/0
        "blackbox/cw_wb/transfer_candidates": 0.0,
        "blackbox/cw_wb/auc": 0.875,
        "blackbox/cw_wb/pairs": 15.0,
    }
    expected = """**T**

| clean | accuracy |
|---|---:|
| test split | 0.9877 |

| gray-box attack | success rate | mean distortion | detection AUC | pairs |
|---|---:|---:|---:|---:|
| fgsm-0.1 | 0.5000 [0.2500, 0.7500] | 0.1000 | 0.912 | 40 |
| jsma | 0.1000 | — | n/a (too few pairs) | 3 |

| white-box | success rate | mean distortion | median breach | converged | detection AUC | pairs |
|---|---:|---:|---:|---:|---:|---:|
| cw_wb | 1.0000 | 0.2500 | 0.2400 | 1 | 0.500 | 50 |
| fmn_wb | 0.9000 | 0.2000 | — | 0 | — | — |

| black-box | transfer rate | candidates | detection AUC | pairs |
|---|---:|---:|---:|---:|
| C&W-wb from a proxy | n/a (0 examples) | 0 | 0.875 | 15 |
"""
    assert run_description("T", metrics) == expected


def test_a_training_only_run_shows_its_last_epoch():
    text = run_description("T", {"train/accuracy": 0.9, "val/accuracy": 0.85, "train/loss": 0.3})
    assert "| train accuracy (last epoch) | 0.9000 |" in text
    assert "| validation accuracy (last epoch) | 0.8500 |" in text
    assert "gray-box" not in text


def test_sanity_checks_close_the_description():
    tags = {
        "sanity/unbounded_attack_succeeds": "failed: unbounded attack below ~100% success",
        "sanity/attack_beats_noise": "passed",
        "seed": "0",  # other tags stay out
    }
    text = run_description("T", {"clean/accuracy": 0.5}, tags)
    assert text.endswith(
        "| evaluation check | result |\n|---|---:|\n"
        "| unbounded_attack_succeeds | failed: unbounded attack below ~100% success |\n"
        "| attack_beats_noise | passed |\n"
    )
