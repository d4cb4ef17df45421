import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def script_env(base: dict | None = None) -> dict:
    """The environment of a child interpreter: unbuffered, importing ``paac`` from this
    checkout whatever checkout an editable install points at."""
    env = dict(os.environ if base is None else base, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [ROOT, env.get("PYTHONPATH")]))
    return env


def run_script(
    script: str, *args: str, timeout: float = 300, **kwargs
) -> subprocess.CompletedProcess:
    """Runs ``experiments/<script>`` in a fresh interpreter (:func:`script_env`),
    capturing its output."""
    env = script_env()
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
