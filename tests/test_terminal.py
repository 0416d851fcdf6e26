"""Terminal output: tables keep every number whole in an 80-column console.

The end-of-command summary and the report's terminal tables are printed into a recording console
of a given width; every value must appear whole, no cell may end in an ellipsis and no line may be
wider than the console.
"""

from __future__ import annotations

import io
import random
import re

from rich.console import Console

from robustctl import metric_keys as keys
from robustctl.summary import print_summary

ATTACKS = ("fgsm", "bim", "pgd", "cw_hc", "deepfool", "jsma")
EPS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)


def summary_metrics() -> tuple[dict[str, float], list[str]]:
    """A realistic ``robustctl run`` metric set (training, gray-box, white-box, black-box,
    resiliency) and the text each value must show as."""
    rng = random.Random(0)
    metrics: dict[str, float] = {
        keys.TRAIN_LOSS: 0.3764,
        keys.TRAIN_ACCURACY: 0.8704,
        keys.VAL_ACCURACY: 0.8333,
        keys.CLEAN_ACCURACY: 0.9921,
        keys.EMBED_DBI: 0.8250,
        keys.EMBED_CLUSTER_VARIANCE: 120.1058,
        keys.EMBED_CLUSTER_DISTANCE: 707.4060,
        keys.EMBED_INPUT_GRAD_NORM_CE: 7.8356,
        keys.EMBED_JACOBIAN_FRO: 44.2822,
        keys.KDE_HELDOUT_LOGLIK: -1234.5678,
    }
    shown = [f"{v:.4f}" for v in metrics.values()]
    for attack in ATTACKS:
        success, distortion, linf, auc = (rng.random() for _ in range(4))
        pairs = rng.randrange(40, 1000)
        metrics[keys.graybox(attack, keys.SUCCESS_RATE)] = success
        metrics[keys.graybox(attack, "distortion")] = distortion
        metrics[keys.graybox(attack, "linf")] = linf
        metrics[keys.graybox(attack, keys.AUC)] = auc
        metrics[keys.graybox(attack, keys.PAIRS)] = pairs
        shown += [f"{success:.4f}", f"{distortion:.4f}", f"{linf:.4f}", f"{auc:.3f}", f"({pairs})"]
    white = {keys.SUCCESS_RATE: 0.9812, "distortion": 0.0731, keys.MEDIAN_DISTORTION: 0.0655}
    for metric, value in white.items():
        metrics[keys.whitebox(metric)] = value
        shown.append(f"{value:.4f}")
    metrics[keys.whitebox(keys.AUC)], metrics[keys.whitebox(keys.PAIRS)] = 0.6123, 512
    shown += ["0.612", "(512)"]
    metrics[keys.BLACKBOX_PROXY_AGREEMENT] = 0.9377
    metrics[keys.BLACKBOX_TRANSFER_RATE] = 0.2144
    metrics[keys.blackbox("distortion")] = 0.0912
    shown += ["0.9377", "0.2144", "0.0912"]
    for attack in ATTACKS:
        for eps in EPS:
            value = rng.random()
            metrics[keys.resiliency(attack, eps)] = value
            shown.append(f"{value:.4f}")
    return metrics, shown


def printed_summary(width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    metrics, _ = summary_metrics()
    info = {"checkpoint": "/tmp/work/checkpoints/9faa55114198/last.pt", "epochs": "20"}
    print_summary(
        "run", metrics, info, "bb9c6e163e4d4047aec47c1aec5ff4e4", "sqlite:///x.db", {}, console
    )
    return console.export_text()


def test_the_summary_keeps_every_value_whole_in_80_columns():
    text = printed_summary(80)
    _, shown = summary_metrics()
    missing = [value for value in shown if value not in text]
    assert not missing, f"cut or missing: {missing}\n{text}"
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    for attack in ATTACKS:  # the split resiliency tables repeat the attack column
        assert attack in text
    for eps in EPS:
        assert re.search(rf"\s{re.escape(f'{eps:g}')}\s", text), eps


def test_a_wide_console_keeps_the_one_table_resiliency_layout():
    text = printed_summary(200)
    assert "(1/2)" not in text and "…" not in text
    assert text.count("Resiliency: accuracy under attack") == 1
    header = next(line for line in text.splitlines() if "attack \\ eps" in line)
    assert [float(x) for x in re.findall(r"\d+\.?\d*", header)] == list(EPS)
    _, shown = summary_metrics()
    assert all(value in text for value in shown)


def report_table():
    """A Table 2 with eight loss columns of ``ours [interval], n=pairs (paper)`` cells, a
    footnoted cell and a failure: far wider than 80 columns side by side."""
    from robustctl.reporting.tables import Cell, Table

    rng = random.Random(1)
    losses = [f"loss{i}" for i in range(8)]
    table = Table("table2", "Table 2: gray-box detection AUC", ["dataset", "attack", *losses])
    for attack in ATTACKS:
        row: list = ["cifar10", f"{attack}-0.05"]
        for _ in losses:
            low, value, high = sorted(rng.random() for _ in range(3))
            row.append(Cell(value, reference=rng.random(), ci_low=low, ci_high=high, pairs=85))
        table.rows.append(row)
    table.rows[0][2] = Cell(0.5, notes=("AUC from fewer than 30 pairs",), pairs=12)
    table.rows[1][3] = Cell(reason="failed: TrainingDiverged: loss became nan at step 12")
    table.headers = {loss: f"contrastive center (variant {i})" for i, loss in enumerate(losses)}
    numbers = [(c, (c.value, c.ci_low, c.ci_high, c.reference)) for c in table.cells()]
    shown = [c.format(v) for c, values in numbers for v in values if v is not None]
    return table, shown


def test_report_tables_keep_every_number_whole_in_80_columns():
    from robustctl.reporting.render import print_tables

    table, shown = report_table()
    console = Console(width=80, record=True, file=io.StringIO())
    print_tables([table], console)
    text = console.export_text()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80, text
    words = set(text.split())
    missing = [v for v in shown if not words & {v, f"{v},", f"[{v},", f"{v}],", f"({v})"}]
    assert not missing, f"cut or missing: {missing}\n{text}"
    assert "n=85" in words and "[1]" in words and "TrainingDiverged" in text
