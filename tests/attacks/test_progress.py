"""The long attacks' inner progress (binary step, iteration): shown on the display that is already
running, throttled, without reading a tensor, and without changing a single result bit."""

from __future__ import annotations

import ast
import inspect
import io
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from rich.console import Console

from robustctl.attacks import build, cw, jsma
from robustctl.attacks import progress as loop_progress
from robustctl.attacks.progress import LoopProgress, redraw_every
from robustctl.console import active_progress, progress

SMALL = {
    "cw_hc": {"binary_steps": 3, "steps": 40, "abort_early": False},
    "jsma": {"steps": 10, "gamma": 1.0},
}


def terminal() -> Console:
    """A console that behaves like an interactive terminal but writes to a buffer."""
    return Console(file=io.StringIO(), force_terminal=True, force_interactive=True, width=120)


@contextmanager
def recorded(bar):
    """Every ``bar.update`` call's keywords, in order (the calls still reach the bar)."""
    calls: list[dict] = []
    update = bar.update

    def record(task, **fields):
        calls.append({"task": task, **fields})
        update(task, **fields)

    bar.update = record
    try:
        yield calls
    finally:
        del bar.update


@pytest.mark.parametrize("method", ["cw_hc", "jsma"])
def test_the_inner_loop_reports_to_the_running_display(trained, method):
    attack = build(method, trained.model, **SMALL[method])
    x, y = trained.x[:8], trained.y[:8]
    with progress(terminal()) as outer:
        outer.add_task("batches", total=1, status="")
        with recorded(outer) as calls:
            attack(x, y)
        assert active_progress() is outer
        assert len(outer.tasks) == 1  # the attack's task is gone again
    assert active_progress() is None
    statuses = [c["status"] for c in calls if "status" in c]
    assert statuses, "the attack never reported its iterations"
    if method == "cw_hc":
        assert "step 1/3  iter 2/40" in statuses and "step 3/3  iter 40/40" in statuses
        assert calls[-1]["completed"] == 3 * 40
        # throttled: every `every` iterations plus one at the end of each binary step
        assert len(calls) <= 3 * 40 // redraw_every(3 * 40) + 3
    else:
        assert all(s.startswith("iter ") and s.endswith("/10") for s in statuses)
        assert len(calls) <= 10 // redraw_every(10)


@pytest.mark.parametrize("method", ["cw_hc", "jsma"])
def test_results_are_bit_identical_with_and_without_the_bar(trained, method):
    x, y = trained.x[:8], trained.y[:8]
    plain = build(method, trained.model, **SMALL[method])(x, y)
    with progress(terminal()):
        shown = build(method, trained.model, **SMALL[method])(x, y)
    for a, b in zip(plain, shown, strict=True):
        assert a is None and b is None or torch.equal(a, b)


TENSOR_READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__int__", "__float__", "__index__")


@contextmanager
def tensor_reads(monkeypatch):
    """(file, line) of every call that copies a tensor value to the host (a device sync on a
    GPU), recorded while the block runs."""
    where: list[tuple[str, int]] = []
    for name in TENSOR_READS:
        original = getattr(torch.Tensor, name)

        def wrapper(self, *args, _original=original, **kwargs):
            caller = sys._getframe(1)
            where.append((caller.f_code.co_filename, caller.f_lineno))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    try:
        yield where
    finally:
        monkeypatch.undo()


def bar_lines(module) -> set[tuple[str, int]]:
    """(file, line) of every line of the ``bar.update(...)`` calls in ``module``'s source."""
    path = inspect.getsourcefile(module)
    lines = set()
    for node in ast.walk(ast.parse(Path(path).read_text())):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "update"
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "bar"
        ):
            lines.update((path, n) for n in range(node.lineno, node.end_lineno + 1))
    return lines


@pytest.mark.parametrize("method", ["cw_hc", "jsma"])
def test_the_bar_reads_no_tensor(trained, monkeypatch, method):
    """Nothing the bar shows is read from a tensor: no host read happens in the progress module
    or in the arguments of the attack's ``bar.update`` calls (the counters are Python ints)."""
    module = cw if method == "cw_hc" else jsma
    watched = bar_lines(module)
    assert watched  # the attack does report to a bar
    x, y = trained.x[:8], trained.y[:8]
    with progress(terminal()) as bar, recorded(bar) as calls:
        with tensor_reads(monkeypatch) as reads:
            build(method, trained.model, **SMALL[method])(x, y)
    assert calls  # the bar was shown
    assert reads  # the recorder works: the attacks read a few values of their own
    from_bar = [r for r in reads if r in watched or r[0] == inspect.getsourcefile(loop_progress)]
    assert not from_bar


def test_no_display_and_no_cost_when_nothing_is_running():
    assert active_progress() is None
    with LoopProgress("loop", 100) as bar:
        assert bar._task is None  # piped output, no display running: no task, no live display
        bar.update(2, ("iter", 2, 100))
    assert active_progress() is None


def test_a_disabled_loop_adds_no_task():
    with progress(terminal()) as outer:
        with LoopProgress("loop", 100, enabled=False):
            assert len(outer.tasks) == 0
