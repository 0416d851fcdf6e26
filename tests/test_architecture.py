"""The package's dependency direction (README, "Layout"): checked on the source, function-level
imports included, and on what importing a package actually loads (the lazy imports, all checked
by one cold Python process: :data:`LAZY_IMPORTS`)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "robustctl"
# the orchestration layer: commands, sweeps, the CLI, reports and the threat-model stages use the
# work layer (training, evaluation), never the other way round
UPPER = (
    "robustctl.threat_models",
    "robustctl.commands",
    "robustctl.sweep",
    "robustctl.experiments",
    "robustctl.cli",
    "robustctl.reporting",
    "robustctl.summary",
    "robustctl.evaluate_config",
)


def imported_modules(path: Path) -> set[str]:
    """Every robustctl module a source file imports, at any depth of its code."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("robustctl")}


def imports_of(package: str) -> dict[str, set[str]]:
    folder = PACKAGE / package.removeprefix("robustctl.").replace(".", "/")
    files = sorted(folder.rglob("*.py")) if folder.is_dir() else [folder.with_suffix(".py")]
    return {str(f.relative_to(PACKAGE.parent)): imported_modules(f) for f in files}


def offenders(package: str, forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{file} imports {name}"
        for file, names in imports_of(package).items()
        for name in sorted(names)
        if name.startswith(forbidden)
    ]


def test_the_source_walker_sees_function_level_imports(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "def f():\n    from robustctl.training.trainer import fit\n    import robustctl.cli\n"
    )
    assert imported_modules(source) >= {"robustctl.training.trainer", "robustctl.cli"}


@pytest.mark.parametrize(
    "package, other",
    [
        ("robustctl.training", "robustctl.evaluation"),
        ("robustctl.evaluation", "robustctl.training"),
    ],
)
def test_training_and_evaluation_do_not_import_each_other(package, other):
    """In the source here; what importing one actually loads: ``test_lazy_imports``."""
    assert offenders(package, (other,)) == []


@pytest.mark.parametrize(
    "package",
    [
        "robustctl.training",
        "robustctl.evaluation",
        "robustctl.attacks",
        "robustctl.defenses",
        "robustctl.losses",
        "robustctl.models",
        "robustctl.data",
        "robustctl.inference",
        "robustctl.tracking",
    ],
)
def test_the_work_layers_never_import_the_orchestration(package):
    assert offenders(package, UPPER) == []


def test_inference_and_metric_keys_sit_below_everything():
    assert offenders("robustctl.inference", ("robustctl",)) == []
    assert offenders("robustctl.metric_keys", ("robustctl",)) == []


def import_graph(package: str) -> dict[str, set[str]]:
    """``{module: the modules of `package` it imports}``, function-level imports included."""
    graph: dict[str, set[str]] = {}
    for file, names in imports_of(package).items():
        module = file.removesuffix(".py").removesuffix("/__init__").replace("/", ".")
        graph[module] = {n for n in names if n.startswith(package)}
    return {m: {n for n in deps if n in graph and n != m} for m, deps in graph.items()}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Each import circle of ``graph`` once (as the path that closes it), by depth-first search."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = "done"

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


def test_the_circle_finder_sees_a_circle_through_a_function_level_import():
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert circles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert circles({"p.a": {"p.b"}, "p.b": set()}) == []


@pytest.mark.parametrize(
    "package",
    [
        "robustctl.attacks",
        "robustctl.config",
        "robustctl.data",
        "robustctl.defenses",  # detectors register themselves (base.DETECTORS)
        "robustctl.evaluation",
        "robustctl.losses",
        "robustctl.models",
        "robustctl.reporting",  # primitives (cells, rows) below the tables, build_tables on top
        "robustctl.threat_models",
        "robustctl.tracking",
        "robustctl.train_defenses",
        "robustctl.training",
        "robustctl.transforms",
    ],
)
def test_no_import_circle_inside_a_package(package):
    """Function-level imports included. (Across packages one circle remains: attacks.cw_wb
    imports defenses, whose base imports attacks; C&W-wb belongs with the threat models.)"""
    assert circles(import_graph(package)) == []


# What importing a module must not load: {check: (module, modules it must not load)}.
LAZY_IMPORTS = {
    # the work layers stay apart when imported, not only in their source
    "training-loads-no-evaluation": ("robustctl.training", ("robustctl.evaluation",)),
    "evaluation-loads-no-training": ("robustctl.evaluation", ("robustctl.training",)),
    # ``robustctl --help`` stays fast: the CLI module loads torch (through the configs) lazily
    "cli-loads-no-torch": ("robustctl.cli", ("torch",)),
    # the report is rendered from MLflow's numbers without torch, and reads them lazily
    "reporting-loads-neither-torch-nor-mlflow": ("robustctl.reporting", ("torch", "mlflow")),
}

# One cold interpreter that imports nothing of its own; each check runs in a fork of it, so each
# import starts from the same pristine ``sys.modules`` (as a fresh ``python -c`` would).
LAZY_IMPORT_PROBE = """
import json, os, sys

results = {}
for check, (module, forbidden) in json.loads(sys.argv[1]).items():
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        try:
            __import__(module)
            loaded = sorted(
                m for m in sys.modules if any(m == f or m.startswith(f + ".") for f in forbidden)
            )
            found = {"loaded": loaded}
        except BaseException as error:
            found = {"error": f"{type(error).__name__}: {error}"}
        with os.fdopen(write, "w") as out:
            out.write(json.dumps(found))
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    results[check] = json.loads(text) if text else {"error": "the check's process died"}
print(json.dumps(results))
"""


@pytest.fixture(scope="module")
def lazy_imports() -> dict[str, dict]:
    """{check: {"loaded": [forbidden modules it loaded]} or {"error": ...}}, from one process."""
    done = subprocess.run(
        [sys.executable, "-c", LAZY_IMPORT_PROBE, json.dumps(LAZY_IMPORTS)],
        cwd=PACKAGE.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


@pytest.mark.parametrize("check", sorted(LAZY_IMPORTS))
def test_lazy_imports(lazy_imports, check):
    module, forbidden = LAZY_IMPORTS[check]
    assert lazy_imports[check] == {"loaded": []}, f"import {module} loads {forbidden}"


def test_the_lazy_import_probe_sees_a_loaded_module():
    """The probe is not vacuous: a module that does load a forbidden one is reported."""
    checks = {
        "json-loads-json.decoder": ("json", ("json.decoder",)),
        "json-loads-no-x": ("json", ("x",)),
    }
    done = subprocess.run(
        [sys.executable, "-c", LAZY_IMPORT_PROBE, json.dumps(checks)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(done.stdout) == {
        "json-loads-json.decoder": {"loaded": ["json.decoder"]},
        "json-loads-no-x": {"loaded": []},
    }
