"""Sphinx configuration of the pyro-lvm documentation.

Build (from the repository root, after ``pip install -e ".[docs]"``)::

    sphinx-build -W --keep-going -b html docs docs/_build/html

The API reference (``docs/api/``, generated, not committed) has one page per subpackage of
:data:`API`, written from each package's ``__all__``: classes and functions through
``automodule :members:``, constants through ``autodata`` with their ``#:`` comments. A name
re-exported from another documented package is documented there only.

The tutorials (``tutorials/*.py``, jupytext percent scripts) are copied into
``docs/tutorials/`` (generated, not committed) and executed by myst-nb in their fast mode;
the figures they show are the committed full-run PNGs of ``tutorials/figures/``.
``PYROLVM_DOCS_EXECUTE=off`` renders them without executing (``cache``, the default,
re-executes a tutorial only when its code changed).
"""

import importlib
import inspect
import os
import pkgutil
import shutil
import sys
from importlib.metadata import PackageNotFoundError, version

from sphinx.ext.napoleon.docstring import GoogleDocstring
from sphinx.pycode import ModuleAnalyzer

DOCS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(DOCS)
sys.path.insert(0, ROOT)  # document the source tree even when it is not installed

# -- project -------------------------------------------------------------------------------
project = "pyro-lvm"
author = "the pyro-lvm developers"
copyright = "2026, the pyro-lvm developers"
try:
    release = version("pyro-lvm")
except PackageNotFoundError:
    release = "0+unknown"
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinxarg.ext",
    "myst_nb",
]
# No intersphinx: it downloads the inventories of Python, PyTorch and Pyro at build time, which
# fails offline (and with -W). References to torch / pyro names render as plain text.

smartquotes = False  # keep "--flag" in the CLI reference (no en dashes)
exclude_patterns = [
    "conf.py",
    "cli_commands.rst",
    "_build",
    "Thumbs.db",
    ".DS_Store",
    "**.ipynb_checkpoints",
]
source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".py": "myst-nb"}

# -- autodoc / napoleon ---------------------------------------------------------------------
# undoc-members: the constants (LIKELIHOODS, ELBOS, ...) and the models' and guides' forward
# signatures are part of the API even where they carry no docstring of their own.
autodoc_default_options = {"members": True, "undoc-members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True  # "Attributes:" as fields: no duplicate entries for dataclass fields
napoleon_use_rtype = False

# Broken cross-references inside the project fail the build; names from other projects
# (no intersphinx, see above) are let through.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|pyro|numpy|np|matplotlib|sklearn|argparse|collections|typing|tyro)(\..*)?"),
    (r"py:.*", r"(Tensor|Sequence|Callable|Any|Path|PathLike|ndarray|Module|Parameter)"),
    (r"py:.*", r"(FlagCreatePairsOff|reparam|lambda)"),  # tyro metadata in the configs' types
    (r"py:.*", r"(TorchDistribution|InferDict|ExpandedDistribution|MultivariateNormal)"),
    (r"py:.*", r"(TransformedDistribution|AutoDelta|ELBO|Trace_ELBO|Distribution)"),
    (r"py:.*", r"(os\.PathLike|pathlib\..*|dataclasses\..*|abc\..*|enum\..*)"),
    (r"py:.*", r"(Exception|ValueError|RuntimeError|KeyError|TypeError)"),
    (r"py:.*", r"(optional|sequence|callables?|dict|tuple|list|str|int|float|bool|None)"),
    (r"py:class", r"pyrolvm(\.\w+)*\._\w+"),  # private base classes shown by show-inheritance
    # the run configs' shared groups of fields (show-inheritance names them; each config's page
    # documents the fields it inherits)
    (r"py:class", r"pyrolvm\.runs\.config\.(Networks|Training|Evaluation)"),
    (r"py:.*", r"(.* or .*|.* of .*)"),  # napoleon's free-form types: "str or None", "dict of ..."
]


def _attribute_docstring_as_prose(self):
    """Napoleon reads the first line of an attribute's or property's docstring as
    ``type: description`` whenever it holds a colon ("latent dimensions (default: 8 ...)"),
    which turns prose into a broken type reference. Here attributes take their types from
    their annotations, so their docstrings are read as prose."""
    lines = self.__class__(self._dedent(self._consume_to_end()), self._config).lines()
    return self._format_field("", "", lines)


GoogleDocstring._parse_attribute_docstring = _attribute_docstring_as_prose

# -- myst / myst-nb -------------------------------------------------------------------------
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_custom_formats = {".py": ["jupytext.reads", {"fmt": "py:percent"}]}
nb_execution_mode = os.environ.get("PYROLVM_DOCS_EXECUTE", "cache")
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_cache_path = os.path.join(DOCS, "_build", ".jupyter_cache")
nb_merge_streams = True
nb_execution_show_tb = True

# The tutorials run in their fast mode; the figures they write go to the build folder, never
# over the committed full-run figures that the pages show.
FAST_FIGURES = os.path.join(DOCS, "_build", "tutorial_fast_figures")
os.makedirs(FAST_FIGURES, exist_ok=True)
os.environ.update(
    PYROLVM_FAST="1",
    PYROLVM_TUTORIAL_FAST="1",
    PYROLVM_FIGURES=FAST_FIGURES,
    PYROLVM_TUTORIAL_OUT=FAST_FIGURES,
    MPLBACKEND="Agg",
    PYTHONPATH=os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p),
)

TUTORIALS = (
    "compare_estimators",
    "losses_and_collapse",
    "posteriors_and_priors",
    "mixture_models",
    "autoregressive_and_codebooks",
    "conditional_and_multimodal",
)
FAST_NOTE = """# %% [markdown]
# ```{note}
# This page is the tutorial `tutorials/NAME.py` executed in its fast mode while the
# documentation was built (a few epochs: the printed numbers are those of that short run). The
# figures are the committed ones of the full run; reproduce them with
# `PYTHONPATH=. python tutorials/NAME.py`.
# ```

"""


def _write_if_changed(path, text):
    """Write ``text`` to ``path`` unless it holds it already (Sphinx rebuilds only then)."""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            if f.read() == text:
                return
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def _copy_tutorials():
    """Copy the tutorial scripts and their figures into docs/tutorials/, adding the note."""
    src, dst = os.path.join(ROOT, "tutorials"), os.path.join(DOCS, "tutorials")
    os.makedirs(dst, exist_ok=True)
    shutil.copytree(os.path.join(src, "figures"), os.path.join(dst, "figures"), dirs_exist_ok=True)
    for name in TUTORIALS:
        with open(os.path.join(src, f"{name}.py"), encoding="utf-8") as f:
            text = f.read()
        # after the first markdown cell (the title and introduction)
        second = text.index("\n# %%", text.index("# %% [markdown]") + 1) + 1
        text = text[:second] + FAST_NOTE.replace("NAME", name) + text[second:]
        _write_if_changed(os.path.join(dst, f"{name}.py"), text)


_copy_tutorials()

# -- API pages --------------------------------------------------------------------------------
#: The subpackages with a page in the API reference, in the order of the index; a missing
#: one is skipped.
API = ("models", "guides", "inference", "fitting", "data", "runs")
#: Further sections of a page (reST appended to it).
API_EXTRA = {
    "inference": """
The compiled step
-----------------

.. automodule:: pyrolvm.inference.compiled
   :members: CompiledStep, resolve_mode, compile_mode, chunk_log_weights, loss_and_grads, update,
      trace, CannotCompile, has_cpp_compiler

One Adam
--------

.. automodule:: pyrolvm.inference.optim
   :members:

Data-parallel training and sharded evaluation (torchrun)
--------------------------------------------------------

.. automodule:: pyrolvm.inference.distributed
   :members:
""",
    "guides": """
Score-function baselines
------------------------

.. automodule:: pyrolvm.guides.baselines
   :no-members:
""",
}
TOP_PAGE = """pyrolvm (errors and version)
============================

.. automodule:: pyrolvm
   :members:

.. autodata:: pyrolvm.__version__
   :no-value:

   The installed package's version, from its metadata.

Network builders
----------------

.. automodule:: pyrolvm.nets
   :members:

Devices
-------

.. automodule:: pyrolvm.devices
   :members:
"""


def _attr_comment(package, name):
    """The ``#:`` comment above ``name = ...`` in the module of ``package`` that defines the
    object ``package.name`` (several modules may define constants of the same name)."""
    mod = importlib.import_module(package)
    obj = getattr(mod, name)
    modules = [package]
    if hasattr(mod, "__path__"):
        modules += [m.name for m in pkgutil.walk_packages(mod.__path__, package + ".")]
    for modname in modules:
        try:
            if getattr(importlib.import_module(modname), name, None) is not obj:
                continue
            docs = ModuleAnalyzer.for_module(modname).find_attr_docs()
        except Exception:  # a module without source, or one that fails to import
            continue
        if ("", name) in docs:
            return [line for line in docs[("", name)] if line.strip()]
    return []


def _is_constant(obj):
    return not (inspect.isclass(obj) or inspect.isroutine(obj) or inspect.ismodule(obj))


def _api_page(short, documented):
    package = f"pyrolvm.{short}"
    mod = importlib.import_module(package)
    names = list(getattr(mod, "__all__", []))
    constants, elsewhere = [], []
    for name in names:
        obj = getattr(mod, name)
        home = getattr(obj, "__module__", None) if not _is_constant(obj) else None
        owner = next((p for p in documented if home and (home + ".").startswith(p + ".")), None)
        if owner and owner != package:
            elsewhere.append((name, owner))
        elif _is_constant(obj):
            constants.append(name)
    lines = [package, "=" * len(package), "", f".. automodule:: {package}", "   :members:"]
    excluded = [n for n, _ in elsewhere] + constants
    if excluded:
        lines.append(f"   :exclude-members: {', '.join(excluded)}")
    if elsewhere:
        refs = ", ".join(f":obj:`~{owner}.{name}`" for name, owner in elsewhere)
        lines += ["", f"Also importable from here, documented with their own package: {refs}."]
    if constants:
        lines += ["", "Constants", "---------"]
        for name in constants:
            obj = getattr(mod, name)
            lines += ["", f".. autodata:: {package}.{name}"]
            if len(repr(obj)) > 200:
                lines.append("   :no-value:")
            comment = _attr_comment(package, name)
            if comment:
                lines += [""] + [f"   {line}" for line in comment]
    return "\n".join(lines) + "\n" + API_EXTRA.get(short, "")


def _write_api_pages():
    """docs/api/*.rst from the packages' __all__ (rewritten only on change)."""
    out = os.path.join(DOCS, "api")
    os.makedirs(out, exist_ok=True)
    # the source tree's packages (an installed copy elsewhere may have others)
    shorts = [s for s in API if os.path.exists(os.path.join(ROOT, "pyrolvm", s, "__init__.py"))]
    documented = [f"pyrolvm.{s}" for s in shorts]
    pages = {f"{i:02d}_{s}": _api_page(s, documented) for i, s in enumerate(shorts)}
    pages[f"{len(shorts):02d}_pyrolvm"] = TOP_PAGE
    for stale in set(os.listdir(out)) - {f"{name}.rst" for name in pages}:
        os.remove(os.path.join(out, stale))
    for name, text in pages.items():
        _write_if_changed(os.path.join(out, f"{name}.rst"), text)


_write_api_pages()


def _write_cli_pages():
    """``docs/cli_commands.rst`` (generated, not committed): the ``--help`` of ``pyrolvm
    evaluate`` and of ``pyrolvm train KIND`` for every registered run kind, as the command
    prints it (tyro's parser nests the commands, which sphinx-argparse does not descend)."""
    import contextlib
    import io

    from pyrolvm.cli import parse
    from pyrolvm.runs import RUNS

    def help_text(argv):
        out = io.StringIO()
        env = os.environ.get("COLUMNS")
        os.environ["COLUMNS"] = "96"
        try:
            with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
                parse([*argv, "--help"])
        finally:
            if env is None:
                del os.environ["COLUMNS"]
            else:
                os.environ["COLUMNS"] = env
        return "\n".join("   " + line for line in out.getvalue().rstrip().splitlines())

    parts = []
    for argv in [["train", name] for name in RUNS] + [["evaluate"]]:
        title = "pyrolvm " + " ".join(argv)
        parts.append(f"{title}\n{'-' * len(title)}\n\n.. code-block:: text\n\n{help_text(argv)}\n")
    _write_if_changed(os.path.join(DOCS, "cli_commands.rst"), "\n".join(parts))


_write_cli_pages()


def _drop_builtin_docstrings(app, what, name, obj, options, lines):
    """A constant (a tuple, dict, str) has no docstring of its own: autodoc would show its
    type's ("Built-in immutable sequence..."). Drop that; the pages describe the constants."""
    doc = type(obj).__doc__
    own = doc.strip().splitlines() if isinstance(doc, str) else []  # may be a slot descriptor
    if what in ("data", "attribute") and lines and own and lines[0].strip() == own[0].strip():
        lines.clear()


def setup(app):
    app.connect("autodoc-process-docstring", _drop_builtin_docstrings)


# -- HTML ------------------------------------------------------------------------------------
html_theme = "furo"
html_title = f"pyro-lvm {release}"
html_static_path = []
