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
