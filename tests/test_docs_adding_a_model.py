"""docs/adding_a_model.md followed literally, end to end, in a temporary copy of the repository:
its files written from the page's code blocks, its one edit applied (the model's export), then
the new kind ``laplace-vae`` trains, evaluates and resumes (extended by an epoch) from the
command line, the model's test file (a name of its own: pytest collects it with the suite)
and the shared run contract for the new kind pass, and ruff (check and format) passes on the
whole copy. The run is a declaration of at most 80 lines, and nothing else of the package (no
line of cli.py, of pyrolvm/runs/__init__.py) is touched. Pyright on the copy is the slow test
at the end."""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
from conftest import REPO

PAGE = os.path.join(REPO, "docs", "adding_a_model.md")
NEW_FILES = (
    "pyrolvm/models/laplace_vae.py",
    "pyrolvm/runs/laplace_vae.py",
    "tests/models/test_laplace_vae_model.py",
)
#: The most lines the run declaration of a new kind takes (the issue's bound).
RUN_LINES = 80


def page_blocks():
    """``{first comment line: code}`` of the page's Python blocks."""
    with open(PAGE) as f:
        text = f.read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    out = {}
    for block in blocks:
        first, _, rest = block.partition("\n")
        assert first.startswith("# "), f"a block of the page names no file: {first!r}"
        out[first[2:]] = rest
    return out


def add_to_package(path, code):
    """Apply an edit block ``from .x import A`` + ``__all__ = [..., "A"]``: the import after
    the package's last top-level import, the names at the head of its ``__all__``."""
    with open(path) as f:
        text = f.read()
    imports = [line for line in code.splitlines() if line.startswith("from .")]
    names = re.findall(r'"(\w+)"', code.split("__all__", 1)[1])
    lines = text.splitlines()
    last, i = 0, 0
    while i < len(lines):  # the end of the last top-level import statement
        if lines[i].startswith(("from .", "import ")):
            if lines[i].rstrip().endswith("("):
                while lines[i] != ")":
                    i += 1
            last = i
        i += 1
    lines[last + 1 : last + 1] = imports
    text = "\n".join(lines) + "\n"
    text = text.replace("__all__ = [\n", "__all__ = [\n" + "".join(f'    "{n}",\n' for n in names))
    with open(path, "w") as f:
        f.write(text)


def copy_repository(dest):
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, (f.decode() for f in files)):
        source = os.path.join(REPO, name)
        if os.path.isfile(source):
            os.makedirs(os.path.dirname(os.path.join(dest, name)), exist_ok=True)
            shutil.copy2(source, os.path.join(dest, name))


@pytest.fixture(scope="module")
def copy(tmp_path_factory):
    """A copy of the repository with the page's files and edits applied."""
    root = str(tmp_path_factory.mktemp("repo"))
    copy_repository(root)
    blocks = page_blocks()
    assert set(NEW_FILES) <= set(blocks), sorted(blocks)
    for name in NEW_FILES:
        with open(os.path.join(root, name), "w") as f:
            f.write(blocks[name])
    edits = [k for k in blocks if k not in NEW_FILES]
    assert edits == ["pyrolvm/models/__init__.py: the import, and the name in __all__"], edits
    add_to_package(os.path.join(root, edits[0].split(":")[0]), blocks[edits[0]])
    return root


def test_the_run_is_a_declaration_of_at_most_80_lines_and_nothing_else_changes(copy):
    with open(os.path.join(copy, "pyrolvm", "runs", "laplace_vae.py")) as f:
        lines = f.read().splitlines()
    assert len(lines) <= RUN_LINES, len(lines)
    changed = []
    for folder, _, files in os.walk(os.path.join(copy, "pyrolvm")):
        for name in files:
            path = os.path.join(folder, name)
            original = os.path.join(REPO, os.path.relpath(path, copy))
            if not name.endswith(".py"):
                continue
            with open(path) as f, open(original if os.path.exists(original) else path) as g:
                if not os.path.exists(original) or f.read() != g.read():
                    changed.append(os.path.relpath(path, copy))
    # the two new files and the model's export: no line of cli.py or of pyrolvm/runs/ else
    expected = {"pyrolvm/models/__init__.py", *NEW_FILES[:2]}
    assert set(changed) == expected, sorted(changed)


def run(root, *argv, check=True):
    env = dict(os.environ, PYTHONPATH=root, OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, *argv], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    if check:
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_the_test_files_have_names_of_their_own():
    # pytest imports test modules by basename (tests/ holds no __init__.py)
    names = {}
    for folder, _, files in os.walk(os.path.join(REPO, "tests")):
        for name in files:
            if name.startswith("test_") and name.endswith(".py"):
                names.setdefault(name, []).append(folder)
    duplicates = {k: v for k, v in names.items() if len(v) > 1}
    assert not duplicates
    for path in NEW_FILES[2:]:
        assert os.path.basename(path) not in names


#: One process runs the commands in turn through the console script's entry point, printing
#: each one's exit status and output between markers (one interpreter start instead of four).
COMMANDS = """
import sys
from pyrolvm.cli import main

for argv in {commands!r}:
    print("=== command", argv, flush=True)
    try:
        status = main(argv)
    except SystemExit as exc:  # --help
        status = exc.code
    print("=== status", status, flush=True)
"""


def test_the_new_kind_trains_evaluates_and_resumes_from_the_command_line(copy):
    fast = ["--hidden", "16", "--eval-samples", "20", "--no-progress"]
    folder = os.path.join(copy, "runs", "laplace-vae")  # the declared default --out
    commands = [
        ["train", "laplace-vae", "--help"],
        ["train", "laplace-vae", "--epochs", "1", *fast],
        ["evaluate", folder, "--no-progress"],
        ["train", "laplace-vae", "--epochs", "2", *fast, "--resume"],
    ]
    out = run(copy, "-c", COMMANDS.format(commands=commands)).stdout
    parts = out.split("=== command")[1:]
    assert [p.rsplit("=== status", 1)[1].strip() for p in parts] == ["0"] * 4, out[-3000:]
    helped, trained, evaluated, resumed = parts
    assert "runs/laplace-vae" in helped and "--latent-dim" in helped
    assert "Laplace-prior VAE on digits, 1 epochs" in trained
    assert "Laplace-prior VAE on digits, 2 epochs" in resumed
    with open(os.path.join(folder, "metrics.json")) as f:
        extended = json.load(f)
    assert extended["epochs"] == 2 and len(extended["curves"]["train_elbo"]) == 2
    # the evaluation printed the figures of the 1-epoch run's metrics.json, recomputed
    nll = re.search(r"test NLL +(\d+\.\d\d) ± (\d+\.\d\d) nats", trained).groups()
    assert f"{nll[0]} ± {nll[1]} nats" in evaluated


def test_the_pages_tests_and_the_run_contract_pass(copy):
    # among them, the model run with torch's default device set to meta (tests/test_devices.py)
    assert 'torch.set_default_device("meta")' in page_blocks()[NEW_FILES[2]]
    contract = ["tests/runs/test_run_contract.py", "-k", "laplace-vae"]
    run(copy, "-m", "pytest", "-q", "-p", "no:cacheprovider", NEW_FILES[2], *contract)


def test_the_pages_code_passes_ruff(copy):
    # "ruff check --fix puts it in order": the import added to the models' __init__
    run(copy, "-m", "ruff", "check", "--fix", "--select", "I", "pyrolvm/models/__init__.py")
    run(copy, "-m", "ruff", "check", ".")
    run(copy, "-m", "ruff", "format", "--check", ".")


@pytest.mark.slow
def test_the_pages_code_passes_pyright(copy):
    run(copy, "-m", "pyright", "--pythonpath", sys.executable)
