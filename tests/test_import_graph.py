"""The package's import graph, read from the source with `ast`: downward only, no cycles, short modules.

Every ``import`` of every module under ``tf_deepemd/`` counts, also those
inside functions (a lazy import is still a dependency).
"""

import ast
import os

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "tf_deepemd")

# Lowest first: a component may import only components of a LOWER rank.
# `official` (the official-checkpoint loader) sits above `models` and is
# imported by nobody but the package root and the tools. `run_folder` imports
# nothing of the package (only Keras): everything from `data` up writes
# files through it.
RANKS = {
    "version": 0,  # the version string, nothing else
    "ops": 0,
    "layers": 1,
    "backbones": 2,
    "encoders": 3,
    "models": 4,
    "run_folder": 4,
    "progress": 4,  # console progress of long loops (keras only)
    "official": 5,
    "data": 5,
    "training": 6,
    "export": 7,
    "retrieval": 8,
    "visualization": 8,
}
ROOT = "__init__"  # tf_deepemd/__init__.py: the public facade, above everything
MAX_LINES = 450


def modules():
    """``{dotted module name: path}`` of every module under tf_deepemd/."""
    found = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                relative = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
                found[relative.removesuffix(".__init__")] = path
    return found


def component(module):
    """``tf_deepemd.<component>...`` -> component (the root package itself: ROOT)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ROOT


def imported_modules(path, module, known):
    """The tf_deepemd modules ``path`` imports (absolute and relative imports)."""
    tree = ast.parse(open(path).read(), path)
    package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
    targets = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from tf_deepemd import data` imports the module tf_deepemd.data.
            targets.update(f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names)
    return {target for target in targets if target == "tf_deepemd" or target.startswith("tf_deepemd.")}


@pytest.fixture(scope="module")
def graph():
    known = modules()
    return {module: imported_modules(path, module, known) for module, path in known.items()}


def test_every_component_has_a_rank(graph):
    unranked = sorted({component(m) for m in graph} - set(RANKS) - {ROOT})
    assert not unranked, f"components without a rank in this test: {unranked}"


def test_components_import_only_downward(graph):
    upward = []
    for module, targets in graph.items():
        source = component(module)
        for target in targets:
            destination = component(target)
            if source == ROOT or destination == source:
                continue
            if destination == ROOT or RANKS[destination] >= RANKS[source]:
                upward.append(f"{module} -> {target}")
    assert not upward, "imports that do not go downward:\n" + "\n".join(sorted(upward))


def test_no_import_cycle_between_modules(graph):
    state, cycles = {}, []

    def visit(module, stack):
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if target not in graph or target == module:
                continue
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


# What the packages used after training may load of `training`: reading a
# run's settings and rebuilding its model, never the stages that train it.
AFTER_TRAINING = ("export", "retrieval", "visualization")
RUN_READERS = {
    "tf_deepemd.training",  # its names are imported on first use
    "tf_deepemd.training.launch",
    "tf_deepemd.training.model_config",
    "tf_deepemd.training.run_settings",
    "tf_deepemd.training.settings_record",
    "tf_deepemd.training.strategy",
}


def loaded_by_import(graph, module):
    """Every package module that importing ``module`` loads: its imports, transitively,
    each with its parent packages (whose ``__init__`` Python runs first)."""
    def with_parents(name):
        parts = name.split(".")
        return {".".join(parts[:end]) for end in range(1, len(parts) + 1)} & set(graph)

    loaded, pending = set(), sorted(with_parents(module))
    while pending:
        current = pending.pop()
        if current in loaded:
            continue
        loaded.add(current)
        for target in graph.get(current, ()):
            pending.extend(with_parents(target) - loaded)
    return loaded


def test_export_retrieval_and_figures_do_not_load_the_training_stack(graph):
    loads = {}
    for module in graph:
        if component(module) in AFTER_TRAINING:
            stack = {m for m in loaded_by_import(graph, module)
                     if component(m) == "training" and m not in RUN_READERS}
            if stack:
                loads[module] = sorted(stack)
    assert not loads, f"modules that load the training stack: {loads}"


def test_the_load_closure_sees_parents_and_transitive_imports(graph):
    """`loaded_by_import` itself: the gin parser loads the stages, a stage loads its package."""
    assert "tf_deepemd.training.experiment" in loaded_by_import(graph, "tf_deepemd.training.gin_config")
    loaded = loaded_by_import(graph, "tf_deepemd.training.stage")
    assert {"tf_deepemd", "tf_deepemd.training", "tf_deepemd.ops"} <= loaded


def test_no_module_over_the_line_limit():
    long = {}
    for module, path in modules().items():
        with open(path) as stream:
            lines = sum(1 for _ in stream)
        if lines > MAX_LINES:
            long[module] = lines
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_the_graph_reader_sees_imports_of_every_kind(tmp_path):
    """The reader itself: absolute, from-, relative, package-member and function-level imports."""
    path = tmp_path / "probe.py"
    path.write_text(
        "import tf_deepemd.ops.crops\n"
        "from tf_deepemd import data\n"
        "from tf_deepemd.layers.sfc import SFC\n"
        "from . import emd_layer\n"
        "def lazy():\n"
        "    from ..models import factory\n"
    )
    known = {"tf_deepemd.data": "", "tf_deepemd.layers.emd_layer": "", "tf_deepemd.models.factory": ""}
    found = imported_modules(str(path), "tf_deepemd.layers.probe", known)
    assert found == {
        "tf_deepemd.ops.crops", "tf_deepemd.data", "tf_deepemd.layers.sfc",
        "tf_deepemd.layers.emd_layer", "tf_deepemd.models.factory",
    }
