"""The run description (the run page's "Description", MLflow's ``mlflow.note.content`` tag): the
numbers the run exists for, as a Markdown table, so the MLflow UI tells the story without
opening the metrics list.

Rows, each with the examples it is computed over:

- clean accuracy on the test split (with its 95% interval when logged);
- per gray-box attack: success rate, mean distortion, detection AUC with its pair count;
- white-box C&W-wb: success rate, mean minimal distortion, AUC with pairs;
- black-box C&W-wb: transfer rate (over its candidates), AUC with pairs;
- a training-only run: final train and validation accuracy;
- the sanity checks (:mod:`robustctl.evaluation.sanity`): passed, failed (possible gradient
  masking) or not checked.

An AUC the run could not compute (too few pairs) shows "n/a" with the pair count.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from robustctl import metric_keys as keys
from robustctl.threat_models.stage import STAGES, Stage


def _value(metrics: Mapping[str, float], key: str, digits: int = 4) -> str:
    if key not in metrics:
        return "—"
    if math.isnan(metrics[key]):  # a rate over no trials (0/0)
        return "n/a (0 examples)"
    text = f"{metrics[key]:.{digits}f}"
    low, high = metrics.get(keys.ci_low(key)), metrics.get(keys.ci_high(key))
    if low is not None and high is not None:
        text += f" [{low:.{digits}f}, {high:.{digits}f}]"
    return text


def _auc(metrics: Mapping[str, float], stage: str, attack: str) -> tuple[str, str]:
    auc = keys.attack_key(stage, attack, keys.AUC)
    pairs = metrics.get(keys.attack_key(stage, attack, keys.PAIRS))
    shown = "n/a (too few pairs)" if auc not in metrics and pairs is not None else None
    return shown or _value(metrics, auc, 3), "—" if pairs is None else str(int(pairs))


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|",
        *("| " + " | ".join(row) + " |" for row in rows),
    ]


def stage_rows(stage: Stage, metrics: Mapping[str, float]) -> list[str]:
    """The stage's table (its ``description`` rows: one per attack, the declared columns, then
    the detection AUC and its pairs) and a blank line; nothing when the run has no such
    metrics."""
    view = stage.description
    attacks = view.attacks_of(keys.attacks_in(metrics, stage.name))
    if not attacks:
        return []
    rows = []
    for attack in attacks:
        cells = []
        for column in view.columns:
            key = keys.attack_key(stage.name, attack, column.metric)
            if column.count:
                cells.append("—" if key not in metrics else str(int(metrics[key])))
            else:
                cells.append(_value(metrics, key))
        rows.append([view.label or attack, *cells, *_auc(metrics, stage.name, attack)])
    header = [view.header, *(c.header for c in view.columns), "detection AUC", "pairs"]
    return [*_table(header, rows), ""]


def run_description(
    title: str, metrics: Mapping[str, float], tags: Mapping[str, str] | None = None
) -> str:
    """Markdown: ``title``, then one table per stage the metrics cover (module docstring), then
    the sanity checks' results found in ``tags`` (``sanity/<check>``)."""
    lines = [f"**{title}**", ""]
    if keys.CLEAN_ACCURACY in metrics:
        lines += _table(
            ["clean", "accuracy"], [["test split", _value(metrics, keys.CLEAN_ACCURACY)]]
        )
        lines.append("")
    elif keys.VAL_ACCURACY in metrics:
        rows = [
            ["train accuracy (last epoch)", _value(metrics, keys.TRAIN_ACCURACY)],
            ["validation accuracy (last epoch)", _value(metrics, keys.VAL_ACCURACY)],
        ]
        lines += [*_table(["training", "value"], rows), ""]
    for stage in STAGES.values():
        lines += stage_rows(stage, metrics)
    checks = keys.sanity_results(tags or {})
    if checks:
        rows = [[name, value] for name, value in checks.items()]
        lines += [*_table(["evaluation check", "result"], rows), ""]
    return "\n".join(lines).rstrip() + "\n"
