"""A3C and GA3C emulated in PAAC's synchronous loop, for comparison on equal footing.

Both modes keep the last parameter versions on the device in a :class:`ParamRing` (one
stacked pytree, written inside the jitted update) and run in the one training loop:
every rollout steps all ``n_e`` environments ``t_max`` times, deterministically.

**a3c** (``--mode a3c``, Mnih et al. 2016). The environments are split into ``W``
workers of ``n_e / W`` consecutive environments (``--workers``, default ``n_e``: one each).
Worker ``w`` acts with its own copy of the parameters, version ``c_w``, and takes its
gradient at that copy (the bootstrap value too) on its own slice of the rollout. The
``W`` gradients are then applied one after another, unaveraged, to the current
parameters through the one shared RMSProp; each apply is an optimiser step with
``lr / W`` (A3C's convention, see :func:`paac.algorithms.common.make_lr_schedule`). A round of
``W`` applies starting at version ``V`` applies worker ``w``'s gradient at version
``V + w``, so its staleness is ``V + w - c_w``. Copies for the next round:

* ``round_robin``: every worker takes the newest parameters right after its own apply,
  as lock-free A3C with equal-speed workers does: ``c_w = V + w + 1``, so from the second
  round on every gradient is ``W - 1`` updates stale.
* ``uniform``: ``c_w = V' - d_w`` with ``V' = V + W`` the version at the next round's
  start and ``d_w`` drawn uniformly from ``0 .. max_staleness``: the copy lags ``d_w``
  updates when acting starts, and its gradient is ``d_w + w`` updates stale when applied.
* ``fixed``: ``d_w = max_staleness`` for every worker.

Copies older than version 0 are version 0. With one worker (``--workers 1``) and
round-robin copies, a3c is exactly sync PAAC.

**ga3c** (``--mode ga3c``, Babaeizadeh et al. 2017). Actions are sampled with the
parameters of ``policy_lag`` updates ago (version 0 before there were as many); the
gradient is taken at the current parameters on that data and applied averaged, as in
sync. With ``policy_lag = 0`` it is exactly sync PAAC.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from paac.algorithms.a2c import a2c_metrics, make_a2c, make_a2c_grad
from paac.algorithms.common import (
    make_logits,
    make_lr_schedule,
    make_optimizer,
    policy_distribution,
)
from paac.core.config import Config
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.ops.losses import A2CLossTerms

Params = chex.ArrayTree


class ParamRing(NamedTuple):
    """The last ``K`` parameter versions: version ``v`` lives in slot ``v % K``.

    ``params`` is the parameter pytree with a leading axis of size ``K`` on every leaf;
    ``versions[k]`` is the version held in slot ``k``.
    """

    params: Params
    versions: chex.Array  # [K] int32


def ring_init(params: Params, size: int) -> ParamRing:
    """A ring of ``size`` slots, every one holding ``params`` as version 0."""
    if size < 1:
        raise ValueError(f"a parameter ring needs at least one slot, got size={size}")
    stacked = jax.tree.map(lambda x: jnp.broadcast_to(x, (size,) + x.shape), params)
    return ParamRing(stacked, jnp.zeros((size,), jnp.int32))


def ring_size(ring: ParamRing) -> int:
    """The number of slots ``K`` of ``ring``."""
    return ring.versions.shape[0]


def ring_push(ring: ParamRing, params: Params, version: chex.Numeric) -> ParamRing:
    """``ring`` with ``params`` stored as ``version`` (overwriting version ``- K``)."""
    slot = jnp.asarray(version, jnp.int32) % ring_size(ring)
    stacked = jax.tree.map(lambda buf, x: buf.at[slot].set(x), ring.params, params)
    return ParamRing(stacked, ring.versions.at[slot].set(version))


def ring_push_many(ring: ParamRing, stacked: Params, versions: chex.Array) -> ParamRing:
    """``ring`` with ``stacked[i]`` stored as ``versions[i]`` for each of the ``W`` versions.

    ``versions`` is ``[W]`` and consecutive; with ``W <= K`` all are stored, otherwise only
    the last ``K`` of them are kept.
    """
    k = ring_size(ring)
    if versions.shape[0] > k:  # only the newest K survive
        stacked = jax.tree.map(lambda x: x[-k:], stacked)
        versions = versions[-k:]
    slots = jnp.asarray(versions, jnp.int32) % k
    params = jax.tree.map(lambda buf, x: buf.at[slots].set(x), ring.params, stacked)
    return ParamRing(params, ring.versions.at[slots].set(versions))


def ring_get(ring: ParamRing, version: chex.Numeric) -> Params:
    """The parameters stored as ``version`` (one of the last ``K`` pushed)."""
    slot = jnp.asarray(version, jnp.int32) % ring_size(ring)
    return jax.tree.map(lambda buf: buf[slot], ring.params)


def ring_gather(ring: ParamRing, versions: chex.Array) -> Params:
    """The parameters of each of ``versions`` ``[W]``, stacked on a leading ``W`` axis."""
    slots = jnp.asarray(versions, jnp.int32) % ring_size(ring)
    return jax.tree.map(lambda buf: buf[slots], ring.params)


def a3c_ring_size(config: Config) -> int:
    """Slots the a3c ring needs: every worker's copy must still be held at a round's start."""
    if config.staleness == "round_robin":
        return config.num_workers  # copies are V - W + 1 .. V
    return config.max_staleness + 1  # copies are V - max_staleness .. V


def next_copies(
    config: Config, version: chex.Array, key: chex.PRNGKey
) -> tuple[chex.Array, chex.PRNGKey]:
    """Workers' copy versions ``[W]`` for the round after one that started at ``version``."""
    w = config.num_workers
    end = version + w  # the version at the next round's start
    if config.staleness == "round_robin":
        return version + 1 + jnp.arange(w, dtype=jnp.int32), key
    if config.staleness == "fixed":
        lag = jnp.full((w,), config.max_staleness, jnp.int32)
    else:
        key, draw = jax.random.split(key)
        lag = jax.random.randint(draw, (w,), 0, config.max_staleness + 1, jnp.int32)
    return jnp.maximum(end - lag, 0), key


def _split_workers(x: chex.Array, w: int, env_axis: int) -> chex.Array:
    """``[..., N, ...]`` -> ``[W, ..., N / W, ...]``: worker ``i`` holds envs ``i*N/W ..``."""
    shape = x.shape
    n = shape[env_axis]
    x = x.reshape(shape[:env_axis] + (w, n // w) + shape[env_axis + 1 :])
    return jnp.moveaxis(x, env_axis, 0)


def split_batch(batch: Batch, w: int) -> Batch:
    """One :class:`Batch` per worker, stacked on a leading ``W`` axis."""
    memory = start = None
    if batch.memory is not None:
        memory = jax.tree.map(lambda m: _split_workers(m, w, 0), batch.memory)
        start = _split_workers(batch.start, w, 1)
    return Batch(
        obs=_split_workers(batch.obs, w, 1),
        action=_split_workers(batch.action, w, 1),
        reward=_split_workers(batch.reward, w, 1),
        terminated=_split_workers(batch.terminated, w, 1),
        truncated=_split_workers(batch.truncated, w, 1),
        mask=_split_workers(batch.mask, w, 1),
        bootstrap_obs=_split_workers(batch.bootstrap_obs, w, 0),
        next_action=None,
        memory=memory,
        start=start,
    )


def make_a3c(config: Config, network, spec: EnvSpec) -> Algorithm:
    """A3C's delayed, unaveraged worker gradients (see the module docstring)."""
    w = config.num_workers
    size = a3c_ring_size(config)
    sync = make_a2c(config, network, spec)  # its initial state and evaluation policy
    optimizer = make_optimizer(config)
    schedule = make_lr_schedule(config)
    grad_fn = make_a2c_grad(config, network)
    logits_fn = make_logits(network)
    dist = policy_distribution(network)

    def init(key):
        state = sync.init(key)  # the same seed, the same network and optimiser state
        extra = {
            "ring": ring_init(state.params, size),
            "copies": jnp.zeros((w,), jnp.int32),
            "workers": ring_init(state.params, w).params,  # every worker holds version 0
            "delay_key": jax.random.fold_in(key, 1),
        }
        return state._replace(extra=extra)

    def act(state: LearnerState, obs, key, *memory):
        key, sample_key = jax.random.split(key)
        copies = state.extra["workers"]
        # [W, N / W, ...]: each worker acts (and carries its memory) with its own copy.
        worker_args = jax.tree.map(lambda x: _split_workers(x, w, 0), (obs, *memory))
        logits, *memory = jax.vmap(logits_fn)(copies, *worker_args)
        logits, *memory = jax.tree.map(
            lambda x: x.reshape((obs.shape[0],) + x.shape[2:]), (logits, *memory)
        )
        return (dist.sample(sample_key, logits), key, *memory)

    def update(state: LearnerState, batch: Batch):
        ring, copy_versions = state.extra["ring"], state.extra["copies"]
        version = state.update_count * w  # optimiser steps so far
        # Every gradient of the round is taken at its worker's copy, fixed before the round.
        stale = state.extra["workers"]
        worker_batch = split_batch(batch, w)
        grads, (terms, values, returns) = jax.vmap(grad_fn)(stale, worker_batch)

        def apply(carry, grad):
            params, opt_state = carry
            updates, opt_state = optimizer.update(grad, opt_state, params)
            params = optax.apply_updates(params, updates)
            return (params, opt_state), params

        (params, opt_state), new_versions = jax.lax.scan(
            apply, (state.params, state.opt_state), grads
        )
        # Versions version + 1 .. version + W into the ring, in one write after the scan.
        ring = ring_push_many(ring, new_versions, version + 1 + jnp.arange(w, dtype=jnp.int32))
        copies, delay_key = next_copies(config, version, state.extra["delay_key"])
        staleness = version + jnp.arange(w, dtype=jnp.int32) - copy_versions
        # Each worker's terms are means over its real steps: weighted by their counts, the
        # means over all real steps of the round, as sync logs them.
        real = worker_batch.mask.reshape(w, -1).sum(axis=1)
        terms = A2CLossTerms(*(jnp.sum(t * real) / jnp.maximum(real.sum(), 1) for t in terms))
        grad_norm = jnp.mean(jax.vmap(optax.tree.norm)(grads))
        metrics = a2c_metrics(
            terms, grad_norm, schedule(version), values, returns, worker_batch.mask
        )
        metrics["staleness"] = jnp.mean(staleness.astype(jnp.float32))
        # The next round's copies, gathered once here rather than at every step of acting;
        # round-robin copies are the versions this round just made, in worker order.
        if config.staleness == "round_robin":
            workers = new_versions
        else:
            workers = ring_gather(ring, copies)
        extra = {"ring": ring, "copies": copies, "workers": workers, "delay_key": delay_key}
        new_state = state._replace(
            params=params, opt_state=opt_state, update_count=state.update_count + 1, extra=extra
        )
        return new_state, metrics

    return Algorithm(init, act, update, sync.policy, memory=sync.memory)


def make_ga3c(config: Config, network, spec: EnvSpec) -> Algorithm:
    """GA3C's policy lag: act with the parameters of ``policy_lag`` updates ago."""
    lag = config.policy_lag
    sync = make_a2c(config, network, spec)

    def init(key):
        state = sync.init(key)
        return state._replace(
            extra={"ring": ring_init(state.params, lag + 1), "acting": state.params}
        )

    def acting_version(state: LearnerState):
        return jnp.maximum(state.update_count - lag, 0)

    def act(state: LearnerState, obs, key, *memory):
        # extra["acting"] is ring_get(ring, acting_version(state)), read once per update; the
        # acting memory is driven by these lagged parameters too.
        return sync.act(state._replace(params=state.extra["acting"]), obs, key, *memory)

    def update(state: LearnerState, batch: Batch):
        lagged = acting_version(state)
        new_state, metrics = sync.update(state, batch)
        ring = ring_push(state.extra["ring"], new_state.params, new_state.update_count)
        metrics["staleness"] = (state.update_count - lagged).astype(jnp.float32)
        acting = ring_get(ring, acting_version(new_state))
        return new_state._replace(extra={"ring": ring, "acting": acting}), metrics

    return Algorithm(init, act, update, sync.policy, memory=sync.memory)
