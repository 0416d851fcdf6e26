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
DOC = PACKAGE.parent / "docs" / "architecture.md"

# The layer table of docs/architecture.md, lowest first: a module may import its own layer and
# the ones below it, never one above (imports written inside functions included).
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "base",
        (
            "errors",
            "console",
            "table_fit",
            "metric_keys",
            "slurm_job",
            "signals",
            "config",
            "inference",
        ),
    ),
    ("models and data", ("models", "data")),
    ("transforms and losses", ("transforms", "losses")),
    ("attacks", ("attacks",)),
    ("defenses", ("defenses",)),
    ("training-time defenses", ("train_defenses",)),
    ("work", ("training", "evaluation", "threat_models")),
    ("tracking", ("tracking",)),
    ("reporting", ("reporting",)),
    (
        "application",
        (
            "options",
            "composition",
            "evaluate_config",
            "summary",
            "commands",
            "sweep",
            "experiments",
            "cli",
            "__main__",
        ),
    ),
]
LAYER_OF = {unit: depth for depth, (_, units) in enumerate(LAYERS) for unit in units}


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
    inner = package.removeprefix("robustctl").removeprefix(".").replace(".", "/")
    folder = PACKAGE / inner if inner else PACKAGE
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


def unit_of(module: str) -> str:
    """The top-level module or package of robustctl a module belongs to (its row's entry)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def upward_imports(graph: dict[str, set[str]], layer_of: dict[str, int]) -> list[str]:
    """Each import of ``graph`` from a module to one of a higher layer."""
    return [
        f"{module} (layer {layer_of[unit_of(module)]}) imports {name} "
        f"(layer {layer_of[unit_of(name)]})"
        for module, names in sorted(graph.items())
        for name in sorted(names)
        if layer_of[unit_of(name)] > layer_of[unit_of(module)]
    ]


def whole_graph() -> dict[str, set[str]]:
    """The import graph of every module of robustctl (``from robustctl import x`` counts as an
    import of ``robustctl.x``; the root package's ``__init__`` holds only the version)."""
    graph = import_graph("robustctl")
    graph.pop("robustctl", None)
    return {m: deps - {"robustctl"} for m, deps in graph.items()}


def test_every_module_of_the_package_has_a_layer():
    units = {unit_of(m) for m in whole_graph()}
    assert units - set(LAYER_OF) == set(), "add them to LAYERS and docs/architecture.md"
    assert set(LAYER_OF) - units == set(), "LAYERS names a module that does not exist"


def test_the_documented_layer_table_is_the_tested_one():
    """docs/architecture.md lists each layer's modules in a table row of its own."""
    rows = [line for line in DOC.read_text().splitlines() if line.startswith("| ")]
    for depth, (name, units) in enumerate(LAYERS):
        row = next((r for r in rows if r.startswith(f"| {depth} |")), "")
        assert name in row, f"layer {depth} ({name}) is not row {depth} of the doc's table"
        assert all(f"`{u}`" in row for u in units), f"row {depth} lacks some of {units}"


def test_no_import_runs_up_the_layer_table():
    """Function-level imports included (a deferred import is still a dependency)."""
    assert upward_imports(whole_graph(), LAYER_OF) == []


def test_no_import_circle_anywhere_in_the_package():
    assert circles(whole_graph()) == []


def test_the_checks_see_a_back_import_written_inside_a_function(tmp_path):
    """What a deliberate back-import into a low layer looks like to the two checks above."""
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from robustctl.cli import app\n")
    graph = whole_graph()
    graph["robustctl.models.m"] = {n for n in imported_modules(source) if n in graph}
    assert upward_imports(graph, LAYER_OF) == [
        "robustctl.models.m (layer 1) imports robustctl.cli (layer 9)"
    ]
    graph["robustctl.cli"] = graph["robustctl.cli"] | {"robustctl.models.m"}
    assert ["robustctl.cli", "robustctl.models.m", "robustctl.cli"] in circles(graph)


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
