"""Terminal output: tables keep every number whole in an 80-column console.

The end-of-command summary and the report's terminal tables are printed into a recording console
of a given width; every value must appear whole, no cell may end in an ellipsis and no line may be
wider than the console.
"""

from __future__ import annotations

import io
import os
import random
import re
import subprocess
import sys

import pytest
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
    # a path longer than the console (pytest's tmp folders): it folds, the metric names do not
    path = "/tmp/pytest-of-someone/pytest-112/test_run_logs_everything_and_e0/checkpoints/9faa5511"
    info = {"checkpoint": f"{path}/last.pt", "epochs": "20"}
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
    assert keys.CLEAN_ACCURACY in text and keys.EMBED_INPUT_GRAD_NORM_CE in text
    for attack in ATTACKS:  # the split resiliency tables repeat the attack column
        assert attack in text
    for eps in EPS:
        assert re.search(rf"\s{re.escape(f'{eps:g}')}\s", text), eps


def test_the_checklist_shows_each_check_its_result_and_why():
    console = Console(width=100, record=True, file=io.StringIO())
    checks = {
        "attack_beats_noise": "passed",
        "query_not_stronger_than_whitebox": "failed: a query attack beats the gradient attack: "
        "square 0.900 above white-box C&W-wb 0.500",
        "detector_claim_plausible": "not checked: no reference robust accuracy for digits",
    }
    print_summary("run", {}, {}, "id", "sqlite:///x.db", {}, console, checks=checks)
    text = console.export_text()
    assert "Evaluation checklist" in text
    lines = {name: next(line for line in text.splitlines() if name in line) for name in checks}
    assert "passed" in lines["attack_beats_noise"]
    assert "FAILED" in lines["query_not_stronger_than_whitebox"] and "square 0.900" in text
    assert "not checked" in lines["detector_claim_plausible"] and "for digits" in text
    empty = Console(width=100, record=True, file=io.StringIO())
    print_summary("run", {}, {}, "id", "sqlite:///x.db", {}, empty)
    assert "Evaluation checklist" not in empty.export_text()  # no checks: no table


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
    from robustctl.reporting.cells import Cell, Table

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


# ----------------------------------------------------------------------------- plain output
COLOUR = re.compile(r"\x1b\[([0-9;]*)m")
TERMINAL_ENV = ("FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE", "COLUMNS")


def colour_codes(text: str) -> list[str]:
    """The SGR escape sequences of ``text`` that set a foreground or background colour."""

    def sets_colour(params: str) -> bool:
        codes = [int(p) for p in params.split(";") if p]
        return any(
            30 <= c <= 38 or 40 <= c <= 48 or 90 <= c <= 97 or 100 <= c <= 107 for c in codes
        )

    return [m.group(0) for m in COLOUR.finditer(text) if sets_colour(m.group(1))]


def robustctl_train(tiny: list[str], **env: str) -> subprocess.CompletedProcess:
    """A real one-epoch ``robustctl train`` with stdout and stderr piped, under ``env``."""
    base = {k: v for k, v in os.environ.items() if k not in TERMINAL_ENV}
    proc = subprocess.run(
        [sys.executable, "-m", "robustctl", "train", *tiny, "trainer.epochs=1"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "robustctl train" in proc.stdout and "see it in the UI" in proc.stdout
    return proc


# a progress-bar row: "epochs ━━━━╸━━━ 1/2  0:00:01 0:00:03" (done/total, elapsed, remaining)
PROGRESS_ROW = re.compile(r"\s\d+/\d+\s.*\s\d+:\d\d:\d\d\s+(\d+:\d\d:\d\d|-:--:--)")
ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.mark.slow
def test_piped_output_is_plain_text(tiny):
    """Piped (CI, `| tee`): no escape code, no carriage return, no progress-bar row."""
    proc = robustctl_train(tiny)
    for stream in (proc.stdout, proc.stderr):
        assert "\x1b[" not in stream and "\r" not in stream
        assert not PROGRESS_ROW.search(stream), stream
    assert "…" not in proc.stdout


@pytest.mark.slow
def test_no_color_keeps_a_forced_terminal_colourless(tiny):
    """FORCE_COLOR makes rich treat the pipe as a terminal (escape codes appear); NO_COLOR then
    keeps every colour out. The control: the same summary under FORCE_COLOR alone has colours."""
    proc = robustctl_train(tiny, FORCE_COLOR="1", NO_COLOR="1")
    assert "\x1b[" in proc.stdout  # forced: a terminal's output (bold, cursor control)
    assert PROGRESS_ROW.search(ESCAPE.sub("", proc.stdout))  # with its progress bars
    assert colour_codes(proc.stdout) == [] and colour_codes(proc.stderr) == []

    metrics, _ = summary_metrics()
    notes = {"graybox/jsma/auc": "too few pairs"}
    for env, coloured in (
        ({"FORCE_COLOR": "1"}, True),
        ({"FORCE_COLOR": "1", "NO_COLOR": "1"}, False),
    ):
        console = Console(file=io.StringIO(), width=80, _environ=env)
        print_summary("run", metrics, {}, "run-id", "sqlite:///x.db", notes, console)
        assert bool(colour_codes(console.file.getvalue())) is coloured, env
