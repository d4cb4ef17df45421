"""Opt-in XLA:CPU fast path: XLA's YNNPACK fusion of dots (and the convolutions it lowers).

Measured on a 2-core AVX-512 CPU with jax 0.10.2 (one process, same batch): with
``--xla_cpu_experimental_ynn_fusion_type=dot`` the nature-CNN update on 80 samples went
from 67 to 38 ms and its forward pass on 16 from 4.1 to 2.5 ms; the nips update on 160
from 97 to 45 ms. Parameters after two updates agree with the plain path to 1.5e-8.

XLA reads its flags once, when the first backend starts, and aborts the process on a
flag it does not know. So :func:`enable_ynn` only adds the flag when the installed
jaxlib registers it and no backend has started yet; it never touches other backends
(the flag is CPU-only). Set ``PAAC_XLA_CPU_YNN=0`` to keep XLA's default path.
"""

from __future__ import annotations

import functools
import mmap
import os

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type=dot"
_FLAG_NAME = b"xla_cpu_experimental_ynn_fusion_type"


@functools.cache
def jaxlib_has_ynn() -> bool:
    """Whether the installed jaxlib registers the YNN fusion flag (else setting it aborts)."""
    try:
        import jaxlib

        root = os.path.dirname(jaxlib.__file__)
        libs = [os.path.join(root, f) for f in os.listdir(root) if f.endswith(".so")]
    except (ImportError, OSError):
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
    import importlib.util

    return any(
        importlib.util.find_spec(name) is not None
        for name in (
            "jax_cuda12_plugin",
            "jax_cuda13_plugin",
            "jax_rocm60_plugin",
            "jax_rocm7_plugin",
        )
    )


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
    from jax._src import xla_bridge

    if xla_bridge.backends_are_initialized() or not jaxlib_has_ynn() or _gpu_plugin_installed():
        return False
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + YNN_FLAG).strip()
    return True
