"""SIGTERM ends a command the way Ctrl-C does: its MLflow runs are marked KILLED with the reason,
one line is printed, and the process exits with 143 (128 + SIGTERM; Ctrl-C: 130).

``timeout``, ``docker stop``, systemd, ``kill`` and SLURM (pre-emption, ``scontrol requeue``,
the time limit) all stop a process with SIGTERM. Python's default is to die at once, leaving every
open run RUNNING; submitit even ignores the signal, so a SLURM job would train on until the
``SIGKILL`` that follows. :func:`stop_on_sigterm` turns the signal into :class:`Terminated` (in a
SLURM job :class:`Preempted`, whose message says the requeued job resumes), raised in the main
thread at the next bytecode, so every ``finally`` and run-closing handler on the way out runs.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from robustctl.slurm_job import current_job

EXIT_CODE = 128 + signal.SIGTERM  # what a shell reports for a process ended by SIGTERM


class Terminated(BaseException):
    """The process received SIGTERM. A BaseException (like KeyboardInterrupt), so no
    ``except Exception`` of a stage or a sweep job swallows it."""


class Preempted(Terminated):
    """SIGTERM inside a SLURM job: pre-empted, requeued or at its time limit."""


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Raise :class:`Terminated` (:class:`Preempted` in a SLURM job) on SIGTERM inside the block,
    restoring the previous handler on exit; off the main thread (where no handler can be set)
    do nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminated(signum: int, frame: object) -> None:
        if current_job() is not None:
            raise Preempted(
                "SLURM sent SIGTERM (pre-empted, requeued or at its time limit); a requeued job "
                "resumes from the last epoch checkpoint"
            )
        raise Terminated("terminated by SIGTERM")

    previous = signal.signal(signal.SIGTERM, terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
