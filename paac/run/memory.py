"""Whether a run's learner state fits in its device's memory, told before it is allocated."""

from __future__ import annotations

import math
import os

import jax
import numpy as np

from paac.algorithms.build import state_template
from paac.core.config import Config, ConfigError, flag
from paac.core.types import EnvSpec

# An update holds the learner state about three times over: the state it was given (not
# donated), the new one, and the gradients and optimiser temporaries (XLA's memory analysis
# of the a3c and ga3c updates: 2.3-2.6x the state).
UPDATE_MEMORY_FACTOR = 3


def device_memory(device) -> int | None:
    """Bytes of memory ``device`` has, or None when it cannot be told.

    Its allocator's limit, or a CPU's physical memory (or this process's cgroup limit,
    when lower).
    """
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    if device.platform != "cpu":
        return None
    return host_memory()


def host_memory() -> int:
    """Bytes of the host's physical memory, or this process's cgroup limit when lower."""
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limits.append(int(f.read().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return min(limits)


def check_state_fits(config: Config, network, spec: EnvSpec, device=None) -> None:
    """Refuses a learner state that an update could not hold in the device's memory.

    The error names the setting that makes it so (the async modes hold many parameter
    versions), instead of an allocation failure deep in XLA at the first update, or the
    OOM killer.
    """
    device = device or jax.local_devices()[0]
    template = state_template(config, network, spec)
    state, have = tree_bytes(template), device_memory(device)
    if have is None or UPDATE_MEMORY_FACTOR * state <= have:
        return
    copies = ""
    if config.mode == "ga3c":
        copies = f"{flag('policy_lag')}={config.policy_lag} keeps {config.policy_lag + 1} "
    elif config.mode == "a3c" and config.staleness == "round_robin":
        copies = f"{flag('workers')}={config.num_workers} keeps {2 * config.num_workers} "
    elif config.mode == "a3c":
        copies = (
            f"{flag('max_staleness')}={config.max_staleness} with "
            f"{flag('workers')}={config.num_workers} keeps "
            f"{config.max_staleness + 1 + config.num_workers} "
        )
    if copies:
        copies = (
            f" ({copies}copies of the {format_bytes(tree_bytes(template.params))} of parameters)"
        )
    raise ConfigError(
        f"the learner state is {format_bytes(state)}{copies}, and an update holds it about "
        f"{UPDATE_MEMORY_FACTOR} times over: more than the {format_bytes(have)} of memory of "
        f"{device.device_kind} {device.id}"
    )


def tree_bytes(tree) -> int:
    """Bytes of the arrays (or shapes and dtypes) of a pytree."""
    return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))


def format_bytes(n: int) -> str:
    """``n`` bytes in GiB, MiB or KiB (one decimal), or in bytes."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def rollout_bytes(config: Config, spec: EnvSpec, n_envs: int) -> int:
    """Bytes of one rollout's buffers for ``n_envs`` environments (:class:`Batch`)."""
    obs = math.prod(spec.obs_shape) * np.dtype(spec.obs_dtype).itemsize
    action = 4 * (spec.num_actions if spec.continuous else 1)  # int32, or float32 [D]
    per_step = obs + action + 4 + 1 + 1 + 4  # observation, action, reward, flags, mask
    return config.t_max * n_envs * per_step + n_envs * obs  # and the bootstrap observation


def check_rollout_fits(config: Config, network, spec: EnvSpec, n_envs: int, device=None) -> None:
    """Refuses rollout buffers that, with the learner state, would not fit in memory.

    The host holds a rollout's buffers for this process's ``n_envs`` environments; the
    device a copy of them and the update's three copies of the learner state (on a CPU
    both are the host's memory). The error names ``--t-max`` and ``--n-envs`` and the
    sizes, instead of NumPy's allocation failure at the first rollout.
    """
    device = device or jax.local_devices()[0]
    state = tree_bytes(state_template(config, network, spec))
    rollout = rollout_bytes(config, spec, n_envs)
    on_device = UPDATE_MEMORY_FACTOR * state + rollout
    checks = [("host", rollout, host_memory())]
    if device.platform == "cpu":
        checks = [("host", rollout + on_device, host_memory())]
    else:
        checks.append((f"{device.device_kind} {device.id}", on_device, device_memory(device)))
    for where, need, have in checks:
        if have is None or need <= have:
            continue
        shape = " x ".join(str(d) for d in spec.obs_shape)
        raise ConfigError(
            f"{flag('t_max')}={config.t_max} with {flag('n_envs')}={config.n_envs} is too "
            f"large: a rollout's buffers take {format_bytes(rollout)} ({config.t_max} x "
            f"{n_envs} observations of {shape} {np.dtype(spec.obs_dtype).name}), and with the "
            f"learner state an update needs {format_bytes(need)}: more than the "
            f"{format_bytes(have)} of memory of the {where}"
        )
