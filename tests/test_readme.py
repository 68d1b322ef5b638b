"""The README's Python example runs as written (with fewer epochs and samples)."""

import os
import re

from conftest import REPO


def test_readme_model_guide_example(capsys):
    text = open(os.path.join(REPO, "README.md")).read()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    example = next(b for b in blocks if "class LaplaceVAE" in b)
    assert "epochs=100" in example and "num_samples=1000" in example
    example = example.replace("epochs=100", "epochs=3").replace("num_samples=1000", "num_samples=20")
    exec(compile(example, "README.md", "exec"), {})
    assert re.search(r"test NLL \d+\.\d\d ± \d+\.\d\d nats", capsys.readouterr().out)
