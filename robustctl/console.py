"""The one rich console everything prints through, and the progress-bar factory.

A display made by :func:`progress` is, while it runs, the one :func:`active_progress` returns: a
loop nested inside it (an attack's iterations inside the attack runner's batch bar) adds its task
there instead of starting a second live display.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)

_running: list[Progress] = []  # displays made by progress() that are running, innermost last


class SharedProgress(Progress):
    """A rich Progress that registers itself as :func:`active_progress` while it runs."""

    def start(self) -> None:
        super().start()
        _running.append(self)

    def stop(self) -> None:
        if self in _running:
            _running.remove(self)
        super().stop()


def active_progress() -> Progress | None:
    """The progress display running now (the innermost one :func:`progress` made), or None."""
    return _running[-1] if _running else None


def progress(target: Console | None = None) -> Progress:
    """A transient progress display for long loops (epochs, batches, attack batches, attack
    iterations) on ``target`` (default: the shared console)."""
    return SharedProgress(
        TextColumn("[bold blue]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=target or console,
        transient=True,
    )


@contextlib.contextmanager
def quiet_loggers(level: int, *names: str) -> Iterator[None]:
    """Raise the named loggers' level to ``level`` inside the block (messages below it are
    dropped), restoring each logger's own level afterwards."""
    loggers = [logging.getLogger(name) for name in names]
    before = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(level)
    try:
        yield
    finally:
        for log, old in zip(loggers, before, strict=True):
            log.setLevel(old)
