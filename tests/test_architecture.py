"""The architecture's rules (docs/architecture.md), checked on the import graph (grimp, the
engine of import-linter): no import cycle anywhere in the package, no private name imported across
modules, and inference never imports a model or a guide."""

import ast
import pathlib

import grimp
import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "pyrolvm"


@pytest.fixture(scope="module")
def graph():
    # every import statement counts, including those inside functions
    return grimp.build_graph("pyrolvm", include_external_packages=False)


def test_no_import_cycle(graph):
    cycles = []
    for importer in sorted(graph.modules):
        for imported in graph.find_modules_directly_imported_by(importer):
            if graph.chain_exists(importer=imported, imported=importer):
                cycles.append(
                    graph.find_shortest_chain(importer=imported, imported=importer) + (imported,)
                )
    assert not cycles, f"import cycles: {cycles}"


def test_inference_imports_no_model_or_guide(graph):
    for layer in ("pyrolvm.models", "pyrolvm.guides", "pyrolvm.fitting", "pyrolvm.runs"):
        assert not graph.chain_exists(
            importer="pyrolvm.inference", imported=layer, as_packages=True
        ), layer


def test_models_guides_and_fitting_do_not_import_runs_or_cli(graph):
    for lower in ("pyrolvm.models", "pyrolvm.guides", "pyrolvm.fitting", "pyrolvm.data"):
        for upper in ("pyrolvm.runs", "pyrolvm.cli"):
            assert not graph.chain_exists(importer=lower, imported=upper, as_packages=True)
    assert not graph.chain_exists(
        importer="pyrolvm.models", imported="pyrolvm.guides", as_packages=True
    )


def test_no_private_name_imported_across_modules():
    found = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                found += [
                    f"{path.relative_to(PACKAGE.parent)}: {a.name} from {node.module}"
                    for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                ]
            elif (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id
                in {
                    "plots",
                    "importance",
                    "evaluation",
                    "training",
                    "common",
                    "config",
                    "registry",
                    "base",
                }
            ):
                found.append(f"{path.relative_to(PACKAGE.parent)}: {node.value.id}.{node.attr}")
    assert not found, found


#: What fits a model: the training loop and its step, optimizers, Pyro's SVI. A run composes
#: and declares; its stages call :mod:`pyrolvm.fitting` (``fit_svi`` for one training call).
FITTING = {"train", "svi_step", "make_optim", "make_scheduled_optim", "SVI", "optim"}


def test_runs_do_no_fitting_of_their_own():
    found = []
    for path in sorted((PACKAGE / "runs").glob("*.py")):
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                module = node.module or ""
                found += [
                    f"{where}: imports {a.name} from {module}"
                    for a in node.names
                    if a.name in FITTING or module.split(".")[-1] in ("optim", "training")
                ]
            elif isinstance(node, ast.Import):
                found += [f"{where}: imports {a.name}" for a in node.names if "optim" in a.name]
            elif isinstance(node, ast.Attribute) and node.attr in FITTING - {"train"}:
                found.append(f"{where}: uses .{node.attr}")
            elif isinstance(node, ast.Call) and getattr(node.func, "id", None) in FITTING:
                found.append(f"{where}: calls {node.func.id}(")  # pyright: ignore
    assert not found, found


#: The longest a function (its signature, docstring and body) may be.
MAX_FUNCTION_LINES = 100
#: Functions over the limit: ``train``, whose signature and code are 74 lines and whose
#: docstring, the API reference of the training loop, 131.
LONG_FUNCTIONS = {"pyrolvm/inference/training.py:train"}


def test_no_function_is_over_100_lines():
    lengths = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                key = f"{path.relative_to(PACKAGE.parent)}:{node.name}"
                lengths[key] = max(lengths.get(key, 0), node.end_lineno - node.lineno + 1)
    long = {key for key, n in lengths.items() if n > MAX_FUNCTION_LINES}
    assert long <= LONG_FUNCTIONS, {key: lengths[key] for key in long - LONG_FUNCTIONS}
    # a function of the list that got short is struck off it
    assert long >= LONG_FUNCTIONS, sorted(LONG_FUNCTIONS - long)
