import os
import subprocess
import sys

import jax
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# XLA compilation is most of the fast tier's time: keep compiled programs between runs of
# the suite (this process only; the scripts the tests start compile afresh). The cache is
# keyed by the program, JAX's version and XLA's flags, so it never changes a number.
jax.config.update("jax_compilation_cache_dir", os.path.join(ROOT, ".pytest_cache", "jax"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


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
