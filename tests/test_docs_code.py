"""Every Python block of the README and of docs/ that defines a model or a guide (calls
``pyro.sample``) is executed by a test under the meta-device check of tests/test_devices.py
(torch's default device set to ``meta``, so that a tensor made without the data's device
fails): the registry below names the test of each, and a new block that no test runs fails
here until one does."""

import os
import re

import pytest
from conftest import REPO

#: (file, a line that identifies the block) -> the test that executes it under the meta check.
EXECUTED = {
    ("README.md", "class LaplaceVAE(nn.Module):"): (
        "tests/test_readme.py: the block runs with train and importance_sample under meta"
    ),
    ("docs/own_pair.md", "class VAE(nn.Module):"): (
        "tests/test_readme.py: the block runs with train and importance_sample under meta"
    ),
    ("docs/adding_a_model.md", "# pyrolvm/models/laplace_vae.py"): (
        "tests/test_docs_adding_a_model.py: the page's own test file runs the model under meta"
    ),
}


def python_blocks():
    """(file relative to the repository, block) for every ```python block of the README and
    of the Markdown pages of docs/ (generated folders excluded)."""
    files = ["README.md"] + sorted(
        os.path.join("docs", name)
        for name in os.listdir(os.path.join(REPO, "docs"))
        if name.endswith(".md")
    )
    out = []
    for name in files:
        with open(os.path.join(REPO, name)) as f:
            out += [(name, b) for b in re.findall(r"```python\n(.*?)```", f.read(), flags=re.S)]
    return out


def test_every_block_that_defines_a_model_or_guide_is_executed_by_a_test():
    defining = [(name, block) for name, block in python_blocks() if "pyro.sample(" in block]
    assert defining  # the README's example and the page on adding a model at least
    for name, block in defining:
        covered = [test for (f, line), test in EXECUTED.items() if f == name and line in block]
        assert covered, (
            f"a block of {name} defines a model or guide that no test executes:\n" + (block[:300])
        )
    for (name, line), test in EXECUTED.items():  # the registry names blocks that exist
        assert any(f == name and line in b for f, b in defining), (name, line, test)


@pytest.mark.parametrize("name, block", python_blocks())
def test_no_block_makes_a_tensor_without_a_device(name, block):
    # the tensors a model or guide makes take the data's device and dtype (x.new_zeros)
    assert not re.search(r"torch\.(zeros|ones|randn|empty|full)\(self\.", block), name
