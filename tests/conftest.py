import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_script(
    script: str, *args: str, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Runs ``experiments/<script>`` in a fresh interpreter, capturing its output.

    The interpreter imports ``paac`` from this checkout, whatever checkout an editable
    install points at.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, os.environ.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "experiments", script), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
        **kwargs,
    )


@pytest.fixture
def script():
    return run_script
