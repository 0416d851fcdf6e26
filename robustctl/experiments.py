"""Named experiments: ``experiments/<name>.yaml`` composed into one parent MLflow run.

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


def experiments_dir() -> Path:
    from robustctl.config import config_dir

    package = Path(__file__).resolve().parent
    for path in (
        package / "experiment_configs",
        config_dir().parent / "experiments",
        Path.cwd() / "experiments",
    ):
        if path.is_dir():
            return path
    raise ConfigError("no experiments/ folder found", hint="run from the robustctl checkout")


def available() -> list[str]:
    return sorted(p.stem for p in experiments_dir().glob("*.yaml"))


def load_experiment(name: str) -> Experiment:
    from omegaconf import OmegaConf

    path = experiments_dir() / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"unknown experiment {name!r} — available: {', '.join(available())}")
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
