"""What every algorithm shares: PAAC's optimiser and learning-rate schedule, and acting."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from paac.core.config import Config
from paac.core.types import EnvSpec, Params
from paac.ops.distributions import Distribution, distribution


def make_lr_schedule(config: Config) -> optax.Schedule:
    """PAAC's learning rate: linear from ``lr`` to 0 over the run's updates, or constant.

    The schedule counts optimiser steps. In a3c mode each of the W workers applies its own
    gradient, so a run takes ``num_updates * W`` optimiser steps, each with ``lr / W``
    (A3C's convention: with one environment per worker, PAAC's ``0.0007 * n_e`` becomes
    A3C's 0.0007 per worker update).
    """
    w = config.num_workers
    if config.lr_schedule == "constant":
        return optax.constant_schedule(config.lr / w)
    return optax.linear_schedule(
        config.lr / w, 0.0, transition_steps=max(config.num_updates * w, 1)
    )


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """Global-norm clipping then TF1-style RMSProp (accumulator starts at 1, eps in the sqrt)."""
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.rmsprop(
            make_lr_schedule(config),
            decay=config.rms_decay,
            eps=config.rms_eps,
            initial_scale=1.0,
            eps_in_sqrt=True,
        ),
    )


def dummy_obs(spec: EnvSpec) -> jnp.ndarray:
    """One observation of zeros, ``[1, *obs_shape]``: what ``network.init`` traces."""
    return jnp.zeros((1,) + spec.obs_shape, spec.obs_dtype)


def is_recurrent(network) -> bool:
    """Whether ``network`` carries a memory (:class:`paac.nets.networks.RecurrentActorCritic`)."""
    return hasattr(network, "initial_memory")


def init_params(network, spec: EnvSpec, key: jax.Array) -> Params:
    """``network``'s initial parameters, traced on one observation (and memory) of zeros."""
    if is_recurrent(network):
        start = jnp.zeros((1, 1), bool)
        return network.init(key, dummy_obs(spec)[None], network.initial_memory(1), start)
    return network.init(key, dummy_obs(spec))


def policy_distribution(network) -> Distribution:
    """The action distribution of ``network``'s policy head: Gaussian for a network with
    ``continuous`` actions, categorical otherwise (:mod:`paac.ops.distributions`)."""
    return distribution(bool(getattr(network, "continuous", False)))


def make_logits(network) -> Callable:
    """``logits(params, obs, *memory) -> (logits, *memory)``: one acting step of ``network``.

    ``logits`` is the policy head's output: logits, or a Gaussian's ``[mean, log_std]``
    (:func:`policy_distribution`).

    Feed-forward: ``logits(params, obs) -> (logits,)``. Recurrent:
    ``logits(params, obs, memory, start) -> (logits, memory)``, one step of the memory,
    zeroed first where ``start``.
    """
    if is_recurrent(network):

        def recurrent(params, obs, memory, start):
            logits, _, memory = network.apply(params, obs[None], memory, start[None])
            return logits[0], memory

        return recurrent

    def feed_forward(params, obs):
        return (network.apply(params, obs)[0],)

    return feed_forward


def make_act(network) -> Callable:
    """``act(params, obs, key, *memory) -> (actions, key, *memory)``: sample from the policy,
    split the key.

    Feed-forward: ``act(params, obs, key) -> (actions, key)``; recurrent:
    ``act(params, obs, key, memory, start) -> (actions, key, memory)`` (:func:`make_logits`).
    Actions are int32 ``[N]``, or float32 ``[N, D]`` drawn from a Gaussian policy (unclipped).
    """
    logits_fn = make_logits(network)
    dist = policy_distribution(network)

    def act(params, obs, key, *memory):
        key, sample_key = jax.random.split(key)
        logits, *memory = logits_fn(params, obs, *memory)
        return (dist.sample(sample_key, logits), key, *memory)

    return act


def make_greedy_act(network) -> Callable:
    """:func:`make_act` taking the most probable action, or a Gaussian's mean (the key is
    unused)."""
    logits_fn = make_logits(network)
    dist = policy_distribution(network)

    def act(params, obs, key, *memory):
        logits, *memory = logits_fn(params, obs, *memory)
        return (dist.mode(logits), key, *memory)

    return act


def num_params(params: Params) -> int:
    """The number of scalars in a parameter pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


UNCHECKED_METRICS = frozenset({"explained_variance"})
"""Metrics that may be nan while training is sound (no variance in the targets)."""


def check_finite(update: Callable) -> Callable:
    """``update`` that also says, inside the same jitted call, whether it stayed finite.

    It checks every metric but those in :data:`UNCHECKED_METRICS`: the losses and the
    gradient norm, so a non-finite gradient is caught in the update that computes it. A
    finite gradient norm bounds every gradient entry (below 1.8e19), so RMSProp's step, and
    with it the parameters, stay finite too; :func:`params_finite` checks the parameters
    themselves before a checkpoint is written. Reading all parameters at every update
    would cost about 1% of an Atari update on a CPU (docs/faults.md); the metrics cost
    nothing measurable.

    Args:
      update: ``update(state, batch) -> (state, metrics)`` of an :class:`Algorithm`.

    Returns:
      ``checked(state, batch) -> (state, metrics, finite)``, ``finite`` a bool scalar.
    """

    def checked(state, batch):
        new_state, metrics = update(state, batch)
        terms = [jnp.all(jnp.isfinite(v)) for k, v in metrics.items() if k not in UNCHECKED_METRICS]
        return new_state, metrics, jnp.all(jnp.stack(terms))

    return checked


@jax.jit
def params_finite(params: Params) -> jax.Array:
    """Whether every parameter is finite (a bool scalar)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(p)) for p in jax.tree.leaves(params)]))


def nonfinite_terms(metrics: dict, finite) -> list[str]:
    """The names of the metrics that went non-finite in an update :func:`check_finite` flagged.

    Args:
      metrics: the update's metrics (device or host arrays).
      finite: its ``finite`` flag.

    Returns:
      ``[]`` when ``finite``; else the names of the non-finite metrics.
    """
    if bool(finite):
        return []
    host = jax.device_get(metrics)
    return [k for k, v in host.items() if k not in UNCHECKED_METRICS and not np.all(np.isfinite(v))]
