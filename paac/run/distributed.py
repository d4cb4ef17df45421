"""Data parallelism over JAX devices and processes: one averaged synchronous gradient.

The ``n_e`` environments are split evenly over the devices of a one-dimensional mesh
(axis :data:`AXIS`), device ``d`` holding environments ``[d * n_e / D, (d + 1) * n_e / D)``.
Each process (host) runs one EnvPool with the environments of its local devices. The
learner state is replicated on every device; the rollout batch is sharded on its
environment axis, and the unchanged update is jitted over the mesh: XLA partitions it and
sums the loss's masked numerators and counts across devices, so the loss is the masked
mean over the whole ``n_e x t_max`` batch and ``D`` devices with ``n_e / D`` environments
each compute the update of one device with ``n_e`` environments (up to float summation
order). Several hosts run the same script under ``jax.distributed.initialize``
(:func:`initialize`).

Action sampling gives the same actions whatever the split: with JAX's partitionable
threefry (``jax_threefry_partitionable``, on by default) random bits depend on the
element's index in the global array, not on how it is sharded.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax._src import xla_bridge
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from paac.core.config import ConfigError, first_line, is_host_port

AXIS = "envs"
"""Name of the mesh axis the environments are split over."""

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def _env_int(name: str) -> int | None:
    value = os.environ.get(name)
    if value in (None, ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"${name}={value!r} is invalid: must be an integer") from None


def distributed_settings(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> tuple[str, int, int] | None:
    """``(coordinator_address, num_processes, process_id)`` of a multi-process run, or None.

    Flags win over the environment variables ``JAX_COORDINATOR_ADDRESS``,
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID``. None when neither asks for several
    processes (no coordinator address and no process count above 1).
    """
    address = coordinator_address or os.environ.get(ENV_COORDINATOR) or None
    count = num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES)
    pid = process_id if process_id is not None else _env_int(ENV_PROCESS_ID)
    if address is None and (count is None or count == 1) and not pid:
        return None
    if address is None:
        given = f"--num-processes={count!r}" if count not in (None, 1) else f"--process-id={pid!r}"
        raise ConfigError(
            f"{given} is invalid without --coordinator-address "
            f"(or ${ENV_COORDINATOR}): the processes need a coordinator to meet at"
        )
    check_address(address)
    if count is None or pid is None:
        missing = "--num-processes" if count is None else "--process-id"
        raise ConfigError(
            f"--coordinator-address={address!r} needs {missing} too (or "
            f"${ENV_NUM_PROCESSES} and ${ENV_PROCESS_ID}): every process must know how "
            "many processes there are and which one it is"
        )
    if count < 1:
        raise ConfigError(
            f"--num-processes={count!r} is invalid (from the flag or ${ENV_NUM_PROCESSES}): "
            "must be an integer >= 1"
        )
    if not 0 <= pid < count:
        raise ConfigError(
            f"--process-id={pid!r} is invalid: must be in [0, --num-processes={count})"
        )
    return address, count, pid


def check_address(address: str) -> None:
    """``host:port`` (``[v6]:port`` for IPv6) with a port in [1, 65535], or a ConfigError."""
    if not is_host_port(address):
        raise ConfigError(
            f"--coordinator-address={address!r} is invalid: must be HOST:PORT, "
            "e.g. 10.0.0.1:1234, with a port in [1, 65535]"
        )


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    timeout_s: int = 300,
) -> bool:
    """Joins a multi-process run with ``jax.distributed.initialize`` when one is asked for.

    Reads the flags, else the environment variables (:func:`distributed_settings`);
    does nothing and returns False for a single-process run, or when JAX's distributed
    runtime is already up. Must run before JAX starts its backends (before any
    computation). Process 0 hosts the coordinator at ``coordinator_address``; the call
    returns once all ``num_processes`` processes have joined (or fails after
    ``timeout_s``). On CPU the cross-process collectives are Gloo's (JAX's default).
    """
    settings = distributed_settings(coordinator_address, num_processes, process_id)
    if settings is None or jax.distributed.is_initialized():
        return False
    address, count, pid = settings
    if xla_bridge.backends_are_initialized():
        raise ConfigError(
            f"--coordinator-address={address!r} came too late: JAX had already started "
            "in this process; call paac.run.distributed.initialize (or "
            "jax.distributed.initialize) before any JAX computation"
        )
    try:
        jax.distributed.initialize(address, count, pid, initialization_timeout=timeout_s)
    except Exception as e:  # grpc/XLA errors of many kinds; all mean the same to the user
        raise ConfigError(
            f"--coordinator-address={address!r}: process {pid} of {count} could not join "
            f"the run ({first_line(e, type(e).__name__)[:300]})"
        ) from None
    return True


def mesh_devices(devices: int | None = None) -> list:
    """The devices of the mesh, process-major.

    Each process's first ``devices / P`` local devices, processes in order (``devices``
    None: all devices of all processes).
    """
    try:
        count, every = jax.process_count(), jax.devices()
    except RuntimeError as e:  # no backend could start
        raise ConfigError(
            f"--devices={devices!r}: the device mesh cannot be built, JAX has no devices "
            f"({first_line(e)[:300]})"
        ) from None
    by_process: dict[int, list] = {}
    for d in every:
        by_process.setdefault(d.process_index, []).append(d)
    local = min(len(v) for v in by_process.values())
    total = local * count if devices is None else devices
    if total % count:
        raise ConfigError(
            f"--devices={devices!r} is invalid: with {count} processes it must be a multiple "
            f"of {count} (each process drives the same number of devices)"
        )
    per_process = total // count
    if per_process > local:
        have = f"{local} per process x {count} processes" if count > 1 else f"{local}"
        raise ConfigError(
            f"--devices={devices!r} is invalid: only {have} {jax.default_backend()} devices "
            "are available"
        )
    return [
        d
        for p in sorted(by_process)
        for d in sorted(by_process[p], key=lambda d: d.id)[:per_process]
    ]


def make_mesh(devices: int | None = None) -> Mesh:
    """A one-dimensional mesh (axis :data:`AXIS`) of ``devices`` devices (None: all)."""
    chosen = mesh_devices(devices)
    try:
        return Mesh(np.array(chosen, dtype=object), (AXIS,))
    except Exception as e:
        raise ConfigError(
            f"--devices={devices!r}: the device mesh cannot be built ({type(e).__name__}: {e})"
        ) from None


class DataParallel:
    """Where a run's learner and environments live: the mesh and this process's share.

    ``n_envs`` environments over ``D`` devices of ``P`` processes: process ``p`` steps
    environments ``[p * n_local, (p + 1) * n_local)`` (``n_local = n_envs / P``) and its
    devices hold them, ``n_envs / D`` each. The learner state is replicated; rollout
    arrays are sharded on their environment axis (axis 1 of ``[T, N, ...]``, axis 0 of
    ``[N, ...]``). With one device and one process this is plain single-device JAX.
    """

    def __init__(self, n_envs: int, devices: int | None = None):
        self.mesh = make_mesh(devices)
        self.num_devices = int(self.mesh.devices.size)
        self.process_index = jax.process_index()
        self.process_count = jax.process_count()
        if n_envs % self.num_devices:
            raise ConfigError(
                f"--n-envs={n_envs!r} is invalid: must be divisible by the {self.num_devices} "
                f"devices it is split over (--devices={devices!r}"
                f"{': all of them' if devices is None else ''}); choose --n-envs or --devices"
            )
        self.n_envs = n_envs
        self.n_local = n_envs // self.process_count
        self.env_offset = self.process_index * self.n_local
        self.replicated = NamedSharding(self.mesh, P())
        self.by_env = NamedSharding(self.mesh, P(AXIS))  # [N, ...]
        self.by_time_env = NamedSharding(self.mesh, P(None, AXIS))  # [T, N, ...]

    @property
    def is_main(self) -> bool:
        """Process 0: the one that writes logs, config and the run lock."""
        return self.process_index == 0

    @property
    def multiprocess(self) -> bool:
        """Whether the run has more than one process."""
        return self.process_count > 1

    def replicate(self, tree: Any) -> Any:
        """Global arrays replicated on every device, from the same host values everywhere."""
        return jax.tree.map(
            lambda x: jax.make_array_from_process_local_data(self.replicated, np.asarray(x)),
            tree,
        )

    def shard_envs(self, local: np.ndarray) -> jax.Array:
        """``[N, ...]`` global array from this process's rows ``[n_local, ...]``."""
        return jax.make_array_from_process_local_data(self.by_env, np.asarray(local))

    def batch_shardings(self, batch: Any) -> Any:
        """The shardings of a :class:`paac.core.types.Batch`: split on the environment axis."""
        return batch._replace(
            obs=self.by_time_env,
            action=self.by_time_env,
            reward=self.by_time_env,
            terminated=self.by_time_env,
            truncated=self.by_time_env,
            mask=self.by_time_env,
            bootstrap_obs=self.by_env,
            next_action=None if batch.next_action is None else self.by_env,
            memory=jax.tree.map(lambda _: self.by_env, batch.memory),
            start=None if batch.start is None else self.by_time_env,
        )

    def shard_batch(self, batch: Any) -> Any:
        """A :class:`paac.core.types.Batch` of this process's environments as global arrays."""
        return jax.make_array_from_process_local_data(self.batch_shardings(batch), batch)

    def local(self, x: jax.Array) -> np.ndarray:
        """This process's rows of an ``[N, ...]`` array sharded over the environments."""
        if not self.multiprocess:
            return np.asarray(x)
        shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
        return np.concatenate([np.asarray(s.data) for s in shards])

    def jit_act(self, act, recurrent: bool = False):
        """``act(state, obs, key) -> (actions, key)`` jitted over the mesh, on host data.

        ``obs`` and the returned actions are this process's rows (NumPy). ``recurrent``:
        ``act(state, obs, key, memory, start) -> (actions, key, memory)``, the memory and
        the start flags this process's rows too.
        """
        rows = (self.by_env, self.by_env) if recurrent else ()  # the memory and start flags
        jitted = jax.jit(
            act,
            in_shardings=(self.replicated, self.by_env, self.replicated, *rows),
            out_shardings=(self.by_env, self.replicated, *rows[:1]),
        )
        # One process: jit places the host arrays itself (the fastest way in).
        place = self.shard_envs if self.multiprocess else (lambda x: x)

        def host_act(state, obs: np.ndarray, key, *memory):
            actions, key, *memory = jitted(state, place(obs), key, *jax.tree.map(place, memory))
            return (self.local(actions), key, *jax.tree.map(self.local, memory))

        return host_act

    def jit_update(self, update):
        """``update(state, batch) -> (state, metrics)`` jitted over the mesh.

        The batch is this process's (host) rollout; the state and metrics stay replicated.
        """
        jitted: dict[bool, Any] = {}  # by whether the batch has next_action

        def sharded_update(state, batch):
            lookahead = batch.next_action is not None
            if lookahead not in jitted:
                jitted[lookahead] = jax.jit(
                    update,
                    in_shardings=(self.replicated, self.batch_shardings(batch)),
                    out_shardings=self.replicated,
                )
            if self.multiprocess:
                batch = self.shard_batch(batch)
            return jitted[lookahead](state, batch)

        return sharded_update

    def allgather(self, local: np.ndarray) -> np.ndarray:
        """``[P, *local.shape]``: every process's ``local`` (same shape), on every process."""
        if not self.multiprocess:
            return np.asarray(local)[None]
        return np.asarray(multihost_utils.process_allgather(np.asarray(local)))

    def agree(self, fn, max_bytes: int = 4096) -> str:
        """Runs ``fn() -> str`` on process 0 alone and returns its result on every process.

        A :class:`ConfigError` it raises is raised on every process with the same message,
        so that no process is left waiting for the others.
        """
        if not self.multiprocess:
            return fn()
        ok, text = True, ""
        if self.is_main:
            try:
                text = fn()
            except ConfigError as e:
                ok, text = False, str(e)
        data = np.zeros(max_bytes + 2, np.uint8)
        raw = text.encode()[:max_bytes]
        data[0], data[1 : 1 + len(raw)] = ok, np.frombuffer(raw, np.uint8)
        data = np.asarray(multihost_utils.broadcast_one_to_all(data))
        text = bytes(data[1:]).rstrip(b"\0").decode(errors="replace")
        if not data[0]:
            raise ConfigError(text)
        return text
