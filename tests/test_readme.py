"""The README's promises: its library example runs, CI runs its test command."""

import os
import re

from tests.conftest import ROOT


def _readme() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        return f.read()


def test_library_example_runs():
    blocks = re.findall(r"```python\n(.*?)```", _readme(), re.S)
    assert blocks, "README has no python example"
    scope: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), scope)
    actions = scope["actions"]
    assert actions.shape == (8,) and int(actions.min()) >= 0 and int(actions.max()) < 2
    assert int(scope["state"].update_count) == 0


def test_ci_runs_the_readme_test_command():
    commands = re.findall(r"```bash\n(.*?)```", _readme(), re.S)
    test_cmd = [ln for block in commands for ln in block.splitlines() if "pytest" in ln]
    assert len(test_cmd) == 1
    with open(os.path.join(ROOT, ".ci", "run")) as f:
        assert test_cmd[0].strip() in [ln.strip() for ln in f]
