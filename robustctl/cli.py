"""``robustctl``: the Typer entry point. Heavy imports (torch, mlflow) happen inside commands.

Every command takes Hydra overrides as positional arguments (``robustctl train dataset=fashion_mnist
trainer.lr=0.05``); ``-m/--multirun`` hands them to Hydra's sweeper and launcher instead
(``robustctl run -m trainer.seed=0,1,2``, ``hydra/launcher=joblib`` for local parallel jobs).
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from robustctl import __version__

app = typer.Typer(
    name="robustctl",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    help="Adversarial-robustness experiments: train, attack, detect; everything logged to MLflow.",
)

Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="Hydra overrides: group=option or key=value.", show_default=False),
]
Multirun = Annotated[
    bool,
    typer.Option(
        "--multirun",
        "-m",
        help="Sweep: comma-separated values run one job each (Hydra sweeper/launcher).",
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")]
ResumeSweep = Annotated[
    str | None,
    typer.Option(
        "--resume",
        metavar="PARENT_RUN_ID",
        help="With -m: reopen this sweep's parent run; finished jobs are skipped, interrupted or "
        "failed ones resume from their checkpoints.",
    ),
]


def _fail(message: str, code: int) -> None:
    from robustctl.console import err_console

    err_console.print(f"[bold red]error:[/] {message}", soft_wrap=True)
    raise typer.Exit(code)


def _guarded(fn, debug: bool, resume: Callable[[BaseException], str] | None = None):
    """Run ``fn``; turn known errors into one readable message and an exit code. Ctrl-C (130)
    and SIGTERM (143) end it the same way: the open MLflow runs are marked KILLED on the way out
    and ``resume(exc)`` gives the command that continues the interrupted work."""
    from robustctl.errors import RobustctlError
    from robustctl.signals import EXIT_CODE, Terminated, stop_on_sigterm

    try:
        with stop_on_sigterm():
            return fn()
    except RobustctlError as exc:
        if debug:
            traceback.print_exc()  # its last lines are the message and the hint already
        _fail(exc.message if debug else str(exc), exc.exit_code)
    except KeyboardInterrupt as exc:
        _fail(_stopped("interrupted (Ctrl-C)", exc, resume), 130)
    except Terminated as exc:
        _fail(_stopped("terminated (SIGTERM)", exc, resume), EXIT_CODE)
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - last-resort handler of the CLI
        if debug:
            traceback.print_exc()
        _fail(f"{type(exc).__name__}: {exc}\n  (run again with --debug for the traceback)", 1)


def _stopped(what: str, exc: BaseException, resume: Callable[[BaseException], str] | None) -> str:
    """One line: what stopped the command, which MLflow run it marked KILLED, how to resume."""
    from robustctl.sweep import parent_run_of
    from robustctl.tracking.lifecycle import run_id_of

    marked = parent_run_of(exc) or run_id_of(exc)
    line = what + (f"; MLflow run {marked} is marked KILLED" if marked else "")
    return line + (f"; to resume: {resume(exc)}" if resume is not None else "")


def _resume_single(command: str, overrides: list[str]) -> Callable[[BaseException], str]:
    """Training resumes from its checkpoint (``trainer.resume=true``); evaluate starts over."""
    kept = [o for o in overrides if not o.startswith("trainer.resume=")]
    if command == "evaluate":
        return lambda exc: f"run it again (a new run): {_shell('evaluate', *kept)}"
    return lambda exc: _shell(command, *kept, "trainer.resume=true")


def _shell(*argv: str) -> str:
    import shlex

    return shlex.join(["robustctl", *argv])


def _single(command: str, overrides: list[str], debug: bool) -> None:
    from robustctl.composition import compose

    def body() -> None:
        from robustctl.commands import execute, print_summary

        raw, cfg = compose(overrides)
        if debug:
            cfg.debug = True
        print_summary(execute(command, cfg, raw, overrides))

    _guarded(body, debug or "debug=true" in overrides, _resume_single(command, overrides))


def _multirun(command: str, overrides: list[str], debug: bool, resume: str | None = None) -> None:
    """Run a Hydra sweep; each job's errors are reported and its MLflow run marked FAILED, the
    sweep goes on. ``resume``: the parent run of an earlier attempt of the sweep."""

    def body() -> int:
        from robustctl.sweep import finish_parent, run_sweep

        extra = ["debug=true"] if debug else []
        return finish_parent(run_sweep(command, [*overrides, *extra], resume_parent=resume))

    def resume_sweep(exc: BaseException) -> str:
        from robustctl.sweep import parent_run_of

        parent = parent_run_of(exc) or resume
        if parent is None:  # stopped before the parent run opened
            return _shell(command, "-m", *overrides)
        return _shell(command, "-m", *overrides, "--resume", parent)

    failed = _guarded(body, debug, resume_sweep)
    if failed:
        _fail(f"{failed} sweep job(s) failed", 1)


def _dispatch(
    command: str,
    overrides: list[str] | None,
    multirun: bool,
    debug: bool,
    resume: str | None = None,
) -> None:
    if resume and not multirun:
        _fail("--resume PARENT_RUN_ID resumes a sweep: add -m (one run: trainer.resume=true)", 2)
    if multirun:
        _multirun(command, list(overrides or []), debug, resume)
    else:
        _single(command, list(overrides or []), debug)


@app.command()
def train(
    overrides: Overrides = None,
    multirun: Multirun = False,
    resume: ResumeSweep = None,
    debug: Debug = False,
) -> None:
    """Train a model (checkpoint each epoch; resume with [bold]trainer.resume=true[/])."""
    _dispatch("train", overrides, multirun, debug, resume)


@app.command(
    help=(
        "Evaluate a trained model: [bold]evaluate.checkpoint=PATH[/], [bold]evaluate.run_id=ID[/], "
        "or the latest training run."
    )
)
def evaluate(
    overrides: Overrides = None,
    multirun: Multirun = False,
    resume: ResumeSweep = None,
    debug: Debug = False,
) -> None:
    _dispatch("evaluate", overrides, multirun, debug, resume)


@app.command()
def run(
    overrides: Overrides = None,
    multirun: Multirun = False,
    resume: ResumeSweep = None,
    debug: Debug = False,
) -> None:
    """Train, then evaluate, in one MLflow run (the main job; [bold]make run[/])."""
    _dispatch("run", overrides, multirun, debug, resume)


@app.command()
def config(overrides: Overrides = None, debug: Debug = False) -> None:
    """Print the composed config and every group's options (validated, nothing runs)."""

    def body() -> None:
        from omegaconf import OmegaConf
        from rich.table import Table

        from robustctl.composition import compose, group_options, selected_options
        from robustctl.console import console

        raw, _ = compose(list(overrides or []))
        container = OmegaConf.to_container(raw, resolve=True)
        container.pop("hydra", None)
        console.print(OmegaConf.to_yaml(OmegaConf.create(container)), markup=False, highlight=False)
        table = Table(title="config groups", header_style="bold")
        table.add_column("group")
        table.add_column("options (selected in bold)")
        chosen = selected_options(container)
        for group, names in group_options().items():
            table.add_row(
                group,
                ", ".join(f"[bold green]{n}[/]" if n == chosen.get(group) else n for n in names),
            )
        console.print(table)

    _guarded(body, debug)


def _check_listenable(host: str, port: int) -> None:
    """Raise a :class:`~robustctl.errors.RobustctlError` naming ``host`` and ``port`` unless a
    server could listen there now (the address is bound once, with ``SO_REUSEADDR`` as the UI's
    server does, and released), so ``ui`` never prints a URL that another process answers."""
    import errno
    import socket

    from robustctl.errors import RobustctlError

    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise RobustctlError(
            f"cannot listen on host {host!r}: {exc.strerror}",
            hint="pass --host 127.0.0.1 (this machine only) or --host 0.0.0.0 (every interface)",
        ) from exc
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    reason = f"port {port} on {host} is already in use by another process"
                else:
                    reason = f"cannot listen on port {port} of {host}: {exc.strerror}"
                raise RobustctlError(reason, hint="pick a free port with --port N") from exc


@app.command()
def ui(
    overrides: Overrides = None,
    port: Annotated[int, typer.Option(help="Port for the UI.")] = 5000,
    host: Annotated[
        str, typer.Option(help="Interface to bind (127.0.0.1 keeps it local).")
    ] = "127.0.0.1",
    debug: Debug = False,
) -> None:
    """Open the MLflow UI on the tracking store the runs were written to, at the runs table of
    the configured experiment."""

    def body() -> None:
        from robustctl.composition import compose
        from robustctl.console import console
        from robustctl.tracking.experiment import find_experiment, runs_view_url
        from robustctl.tracking.store import check_reachable, resolve_tracking_uri

        _, cfg = compose(list(overrides or []))
        uri = resolve_tracking_uri(cfg.tracking, cfg.work_dir)
        if uri.startswith(("http://", "https://")):
            check_reachable(uri)
            found = find_experiment(uri, cfg.tracking.experiment)
            console.print(
                f"runs are on the MLflow server {uri}: open {runs_view_url(uri, found)}",
                soft_wrap=True,
            )
            return
        _check_listenable(host, port)
        found = find_experiment(uri, cfg.tracking.experiment)
        url = runs_view_url(f"http://{host}:{port}", found)
        console.print(f"MLflow UI for {uri}", soft_wrap=True)
        if found is None:
            console.print(f"[yellow]no experiment {cfg.tracking.experiment!r} there yet[/]")
        console.print(f"open [bold]{url}[/] (Ctrl-C stops it)", soft_wrap=True)
        argv = [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            uri,
            "--host",
            host,
            "--port",
            str(port),
            "--workers",  # one local user: one worker starts in a quarter of the time of four
            "1",
        ]
        sys.stdout.flush()  # exec replaces the process: buffered lines would be lost
        os.execv(sys.executable, argv)

    _guarded(body, debug)


@app.command(
    help=(
        "Run a named experiment (experiments/NAME.yaml) as one parent MLflow run with a child per "
        "job, then its report."
    )
)
def experiment(
    name: Annotated[
        str,
        typer.Argument(
            help=(
                "An experiment of experiments/ "
                "(smoke, paper_fashion_cpu, paper_mnist, paper_cifar10)."
            )
        ),
    ],
    overrides: Overrides = None,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Reopen the latest run of this experiment: finished children are kept, "
            "interrupted or failed ones resume from their checkpoints, the rest run.",
        ),
    ] = False,
    parent: Annotated[
        str | None,
        typer.Option("--parent", help="With --resume: the parent run id to resume."),
    ] = None,
    debug: Debug = False,
) -> None:
    def body() -> int:
        from robustctl.experiments import run_experiment

        extra = [*(overrides or []), *(["debug=true"] if debug else [])]
        return run_experiment(name, extra, resume=resume or parent is not None, parent=parent)

    def resume_experiment(exc: BaseException) -> str:
        from robustctl.sweep import parent_run_of

        chosen = parent_run_of(exc) or parent
        where = ["--parent", chosen] if chosen else []
        return _shell("experiment", name, *(overrides or []), "--resume", *where)

    failed = _guarded(body, debug, resume_experiment)
    if failed:
        _fail(f"{failed} child run(s) failed (see the report)", 1)


@app.command()
def sync(
    folder: Annotated[
        Path,
        typer.Argument(
            help="A run's folder under <work_dir>/tracking-fallback (or that folder itself)."
        ),
    ],
    uri: Annotated[
        str | None, typer.Option(help="Send to this tracking server instead of the original.")
    ] = None,
    debug: Debug = False,
) -> None:
    """Send the writes a run kept locally while its tracking server was unreachable."""

    def body() -> None:
        from robustctl.console import console
        from robustctl.errors import RobustctlError
        from robustctl.tracking.fallback import sync as replay

        if not folder.exists():
            raise RobustctlError(
                f"{folder} does not exist",
                hint="the run's last message names its folder, "
                "<work_dir>/tracking-fallback/<run id>",
            )
        count = replay(folder, uri)
        if count == 0:
            console.print(f"nothing to sync in {folder}: its journals were synced before")
        else:
            console.print(f"synced {count} writes from {folder}")

    _guarded(body, debug)


def _check_out_folder(out: Path) -> None:
    """Raise a :class:`~robustctl.errors.RobustctlError` when ``out`` cannot be the report's
    folder: it, or the nearest of its parents that exists, is not a folder."""
    from robustctl.errors import RobustctlError

    existing = next((p for p in (out, *out.parents) if p.exists()), None)
    if existing is not None and not existing.is_dir():
        where = "is" if existing == out else f"is inside {existing}, which is"
        raise RobustctlError(
            f"--out {out} {where} a file, not a folder",
            hint="pass --out a folder (new or existing) for report.md, the CSVs and report.html",
        )


@app.command(
    help=(
        "Paper Tables 1-4 from the runs in MLflow, beside the paper's numbers: terminal, Markdown, "
        "CSV, HTML. Covers the latest experiment (parent run) unless --all."
    )
)
def report(
    run_ids: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run ids to report on (default: the latest experiment's runs).",
            show_default=False,
        ),
    ] = None,
    experiment: Annotated[
        str | None, typer.Option(help="MLflow experiment name (default: tracking.experiment).")
    ] = None,
    parent: Annotated[
        str | None, typer.Option(help="Only the child runs of this parent run id.")
    ] = None,
    all_runs: Annotated[
        bool,
        typer.Option(
            "--all",
            help=(
                "Every run of the experiment (default: only the children of the latest parent "
                "run, i.e. the most recent `robustctl experiment`)."
            ),
        ),
    ] = False,
    out: Annotated[
        str, typer.Option(help="Folder for report.md, table1-4.csv and report.html.")
    ] = "reports/latest",
    uri: Annotated[
        str | None, typer.Option(help="Tracking URI (default: the project's store).")
    ] = None,
    debug: Debug = False,
) -> None:
    def body() -> None:
        from pathlib import Path

        from robustctl.composition import compose
        from robustctl.console import console
        from robustctl.reporting import build_report
        from robustctl.tracking.store import check_reachable, resolve_tracking_uri

        _check_out_folder(Path(out))  # before the runs are read: a bad --out fails at once
        _, cfg = compose([])
        tracking_uri = uri or resolve_tracking_uri(cfg.tracking, cfg.work_dir)
        check_reachable(tracking_uri)
        result = build_report(
            tracking_uri,
            experiment=experiment or (None if run_ids else cfg.tracking.experiment),
            run_ids=run_ids or None,
            out_dir=Path(out),
            parent_run_id=parent,
            all_runs=all_runs,
        )
        result.print(console)
        console.print(f"written: {', '.join(str(p) for p in result.files.values())}")

    _guarded(body, debug)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robustctl {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Adversarial-robustness experiments: train, attack, detect; everything logged to MLflow."""


def main() -> None:
    app()


if __name__ == "__main__":
    main()
