"""Progress of an attack's inner loop: binary-search step, iteration, ETA.

C&W-hc, C&W-wb and JSMA run hundreds to thousands of iterations per batch. Each wraps its loop in
a :class:`LoopProgress`: one task (``step 3/9  iter 400/1000``, its bar and ETA) on the progress
display that is already running, such as the attack runner's batch bar, so that there is never a
second live display; with none running, a display of its own when the console is interactive;
otherwise nothing.

The loop hands over Python ints only, never a tensor, so the bar adds no device-to-host
synchronization, and the task is redrawn at most every ``every`` iterations.
"""

from __future__ import annotations

import math
from types import TracebackType

from rich.progress import Progress, TaskID

from robustctl.console import active_progress, console, progress

UPDATES_PER_LOOP = 100  # redraws per loop at most (plus one at the end of each binary step)
MIN_EVERY = 2  # never redraw more often than every this many iterations


def redraw_every(total: int) -> int:
    """Iterations between two redraws of a loop of ``total`` iterations."""
    return max(MIN_EVERY, math.ceil(total / UPDATES_PER_LOOP))


class LoopProgress:
    """Context manager: one progress task of ``total`` iterations named ``description``
    (module doc). ``enabled=False`` makes every call a no-op."""

    def __init__(self, description: str, total: int, enabled: bool = True) -> None:
        self.description, self.total, self.enabled = description, total, enabled
        self.every = redraw_every(total)
        self._bar: Progress | None = None
        self._own: Progress | None = None
        self._task: TaskID | None = None

    def __enter__(self) -> LoopProgress:
        if not self.enabled:
            return self
        bar = active_progress()
        if bar is None and console.is_interactive:
            bar = self._own = progress()
            bar.start()
        if bar is not None:
            self._bar = bar
            self._task = bar.add_task(self.description, total=self.total, status="")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.remove_task(self._task)
        if self._own is not None:
            self._own.stop()
        self._bar = self._own = self._task = None

    def update(self, done: int, *counters: tuple[str, int, int], force: bool = False) -> None:
        """``done`` of ``total`` iterations, status ``name i/n`` per counter; redrawn when
        ``done`` is a multiple of ``every`` or ``force`` (ints only: no tensor is read)."""
        if self._task is None or (done % self.every and not force):
            return
        status = "  ".join(f"{name} {i}/{n}" for name, i, n in counters)
        self._bar.update(self._task, completed=done, status=status)  # type: ignore[union-attr]
