"""Named experiments: ``experiments/<name>.yaml`` composed into one parent MLflow run.

``<name>.yaml`` is looked up in the current directory's ``experiments/`` first (your own
experiments, which shadow a bundled one of the same name), then in the experiments bundled with
robustctl (:func:`experiment_dirs`).

An experiment file holds ``description``, ``command`` (run | train | evaluate), ``sweep`` (group or
key -> list of values: one child run per combination) and ``overrides`` (applied to every child).
``robustctl experiment NAME [extra overrides]`` runs the sweep through Hydra (so
``hydra/launcher=joblib`` parallelizes it), nests every child under a parent run tagged
``experiment=NAME``, then renders the report of the children and logs it to the parent
(``report/``; its figures also under ``plots/``, its tables as the parent's description). Every
child registers its trained network in the Model Registry (``tracking.register_model=true``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustctl.errors import ConfigError

COMMANDS = ("run", "train", "evaluate")


@dataclass
class Experiment:
    name: str
    description: str = ""
    command: str = "run"
    sweep: dict[str, list[Any]] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    def sweep_overrides(self) -> list[str]:
        return [f"{key}={','.join(str(v) for v in values)}" for key, values in self.sweep.items()]


def experiment_dirs() -> list[Path]:
    """The folders searched for ``NAME.yaml``, first match wins: the user's own ``experiments/``
    in the current directory, then the bundled one (``experiment_configs`` inside an installed
    package, ``experiments/`` beside ``conf/`` in a checkout). Only existing folders, each once."""
    from robustctl.config import config_dir

    package = Path(__file__).resolve().parent
    candidates = [Path.cwd() / "experiments", package / "experiment_configs"]
    try:
        candidates.append(config_dir().parent / "experiments")
    except ConfigError:  # no bundled conf/: the user's folder may still hold experiments
        pass
    found: list[Path] = []
    for path in candidates:
        if path.is_dir() and path.resolve() not in {f.resolve() for f in found}:
            found.append(path)
    return found


def available() -> list[str]:
    """The names of every experiment in :func:`experiment_dirs`, sorted, each once."""
    return sorted({p.stem for folder in experiment_dirs() for p in folder.glob("*.yaml")})


def find_experiment_file(name: str) -> Path:
    """``NAME.yaml`` from the first folder of :func:`experiment_dirs` that has it; a
    :class:`ConfigError` naming the folders searched and the experiments they hold otherwise."""
    folders = experiment_dirs()
    for folder in folders:
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    searched = ", ".join(str(f) for f in folders) or (
        f"none: no {Path.cwd() / 'experiments'} and no bundled experiments"
    )
    names = ", ".join(available()) or "none"
    raise ConfigError(
        f"unknown experiment {name!r} — available: {names} (searched: {searched})",
        hint=f"pick one of those, or write ./experiments/{name}.yaml",
    )


def load_experiment(name: str) -> Experiment:
    """The experiment ``NAME`` (:func:`find_experiment_file`), its keys and command checked."""
    from omegaconf import OmegaConf

    path = find_experiment_file(name)
    data = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
    unknown = set(data) - {"description", "command", "sweep", "overrides"}
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(sorted(unknown))}")
    exp = Experiment(name=name, **data)
    if exp.command not in COMMANDS:
        raise ConfigError(
            f"{path}: command must be one of {', '.join(COMMANDS)}, got {exp.command!r}"
        )
    return exp


def run_experiment(
    name: str, extra: list[str], resume: bool = False, parent: str | None = None
) -> int:
    """Run the experiment's sweep under a parent run, log the report to it, and end it; returns
    the number of child runs that failed. ``resume``: reopen the latest parent run of this
    experiment (or ``parent``) and skip or resume each child (:mod:`robustctl.sweep`)."""
    import tempfile

    from robustctl.console import console
    from robustctl.reporting import build_report
    from robustctl.sweep import finish_parent, latest_parent, run_sweep

    exp = load_experiment(name)
    overrides = [
        *exp.overrides,
        f"tracking.experiment_tag={name}",
        "tracking.register_model=true",
        *extra,
        *exp.sweep_overrides(),
    ]
    if resume and parent is None:
        fixed = [o for o in overrides if "," not in o and not o.startswith("hydra")]
        parent = latest_parent(fixed, name)
    if parent is not None:
        console.print(f"[green]resuming[/] experiment {name} under parent run {parent}")
    parent = run_sweep(
        exp.command,
        overrides,
        name=f"experiment-{name}",
        tags={"command": "experiment", "description": exp.description},
        resume_parent=parent,
    )
    with tempfile.TemporaryDirectory() as tmp:
        report = build_report(
            parent.uri,
            run_ids=None,
            experiment=None,
            out_dir=Path(tmp),
            parent_run_id=parent.run_id,
        )
        report.print(console)
        for path in report.files.values():
            parent.log_artifact(path, "report")
        for figure in report.budget_figures:  # where the MLflow UI's artifact view looks first
            parent.log_artifact(figure.path, "plots")
    parent.set_description(experiment_description(exp, report.markdown()))
    return finish_parent(parent, "child run")


def experiment_description(exp: Experiment, report_markdown: str) -> str:
    """The parent run's description: the experiment's name and purpose, then its report (cut
    to MLflow's tag limit, with a pointer to the whole report artifact)."""
    from robustctl.tracking.run import MAX_TAG_LENGTH

    head = f"**robustctl experiment {exp.name}**: {exp.description}".rstrip(": ") + "\n\n"
    cut = "\n\n… (cut here: the whole report is the artifact report/report.md)\n"
    body = report_markdown
    if len(head) + len(body) > MAX_TAG_LENGTH:
        body = body[: MAX_TAG_LENGTH - len(head) - len(cut)] + cut
    return head + body
