"""Opt-in XLA:CPU fast path: XLA's YNNPACK fusion of dots (and the convolutions it lowers).

XLA reads its flags once, when the first backend starts, and aborts the process on a
flag it does not know. So :func:`enable_ynn` only adds the flag when the installed
jaxlib registers it and no backend has started yet; it never touches other backends
(the flag is CPU-only). Set ``PAAC_XLA_CPU_YNN=0`` to keep XLA's default path. What it
gains is measured in docs/performance.md.
"""

from __future__ import annotations

import functools
import importlib.util
import mmap
import os

import jaxlib
from jax._src import xla_bridge

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
_FLAG_NAME = b"xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def jaxlib_has_ynn() -> bool:
    """Whether the installed jaxlib registers the YNN fusion flag (else setting it aborts)."""
    try:
        root = os.path.dirname(jaxlib.__file__)
        libs = [os.path.join(root, f) for f in os.listdir(root) if f.endswith(".so")]
    except OSError:
        return False
    for path in sorted(libs, key=os.path.getsize, reverse=True):
        try:
            with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                if m.find(_FLAG_NAME) >= 0:
                    return True
        except (OSError, ValueError):
            continue
    return False


_GPU_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin", "jax_rocm7_plugin")


def _gpu_plugin_installed() -> bool:
    """A CUDA or ROCm PJRT plugin parses XLA_FLAGS too, and may not know a CPU-only flag;
    with a GPU the learner runs there anyway, so the flag is left out."""
    return any(importlib.util.find_spec(name) is not None for name in _GPU_PLUGINS)


def ynn_enabled() -> bool:
    """Whether XLA_FLAGS asks for YNN dot fusion."""
    return "ynn_fusion_type=dot" in os.environ.get("XLA_FLAGS", "")


def enable_ynn() -> bool:
    """Adds :data:`YNN_FLAG` to ``XLA_FLAGS`` when safe and wanted; returns whether it is on.

    Call before JAX runs anything (the command-line entry points do).
    """
    if ynn_enabled():
        return True
    if os.environ.get("PAAC_XLA_CPU_YNN", "1") == "0" or "ynn_fusion_type" in os.environ.get(
        "XLA_FLAGS", ""
    ):
        return False
    if xla_bridge.backends_are_initialized() or not jaxlib_has_ynn() or _gpu_plugin_installed():
        return False
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + YNN_FLAG).strip()
    return True
