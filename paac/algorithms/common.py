"""What every algorithm shares: PAAC's optimiser and learning-rate schedule, and acting."""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

from paac.core.config import Config
from paac.core.types import EnvSpec, Params


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


def make_act(network) -> Callable:
    """``act(params, obs, key) -> (actions, key)``: sample from the policy, split the key."""

    def act(params, obs, key):
        key, sample_key = jax.random.split(key)
        logits, _ = network.apply(params, obs)
        actions = jax.random.categorical(sample_key, logits).astype(jnp.int32)
        return actions, key

    return act


def make_greedy_act(network) -> Callable:
    """``act(params, obs, key) -> (actions, key)`` taking the most probable action."""

    def act(params, obs, key):
        logits, _ = network.apply(params, obs)
        return jnp.argmax(logits, axis=-1).astype(jnp.int32), key

    return act


def num_params(params: Params) -> int:
    """The number of scalars in a parameter pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
