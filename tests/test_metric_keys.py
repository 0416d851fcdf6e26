"""Metric keys: builders and parsers agree, and docs/metrics.md documents every key."""

from __future__ import annotations

from pathlib import Path

import pytest

from robustctl import metric_keys as keys

DOC = (Path(__file__).resolve().parents[1] / "docs" / "metrics.md").read_text()


@pytest.mark.parametrize(
    "stage, attack, metric",
    [
        ("graybox", "fgsm-0.05", "auc"),
        ("whitebox", "cw_wb", "success_rate"),
        ("blackbox", "proxy", "agreement"),
        ("robust", "apgd-t", "robust_accuracy"),
    ],
)
def test_attack_keys_parse_back(stage, attack, metric):
    key = keys.attack_key(stage, attack, metric)
    assert key == f"{stage}/{attack}/{metric}"
    assert keys.parse_attack_key(key) == (stage, attack, metric)


def test_other_keys_are_not_attack_keys():
    for key in (
        "clean/accuracy",
        "resiliency/fgsm/eps_0.1",
        "bim_path/bim-0.1/input_grad_norm",
        "graybox/fgsm",
        "graybox/a/b/c",
    ):
        assert keys.parse_attack_key(key) is None


@pytest.mark.parametrize("eps", [0.025, 0.1, 0.125, 1.0])
def test_resiliency_keys_round_trip(eps):
    key = keys.resiliency("fgsm", eps)
    assert keys.parse_resiliency(key) == ("fgsm", eps)
    assert keys.parse_resiliency(keys.graybox("fgsm", "auc")) is None


def test_attacks_in_keeps_first_seen_order_per_stage():
    metrics = [
        keys.graybox("b", "auc"),
        keys.whitebox("auc"),
        keys.graybox("a", "pairs"),
        keys.graybox("b", "pairs"),
        keys.resiliency("a", 0.1),
    ]
    assert keys.attacks_in(metrics, keys.GRAYBOX) == ["b", "a"]
    assert keys.attacks_in(metrics, keys.WHITEBOX) == ["cw_wb"]


def test_every_fixed_key_and_family_is_documented():
    fixed = [v for k, v in vars(keys).items() if k.isupper() and isinstance(v, str) and "/" in v]
    assert len(fixed) > 15
    missing = [key for key in fixed if f"`{key}`" not in DOC]
    assert missing == []
    families = [
        "graybox/<attack>/",
        "resiliency/<attack>/eps_<eps>",
        "bim_path/<attack>/",
        "whitebox/cw_wb/",
        "blackbox/cw_wb/",
        "robust/ensemble/",
        "robust/<member>/",
        "time/<stage>_s",
        "train/<term>",
    ]
    assert [f for f in families if f not in DOC] == []
