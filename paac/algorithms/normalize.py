"""Observation and reward normalisation (``--normalize-obs``, ``--normalize-reward``).

:func:`normalized` wraps any :class:`~paac.core.types.Algorithm` of the loop. Its statistics
live in ``LearnerState.norm``, so that they are checkpointed with the parameters, a resumed
run continues them exactly, and evaluation plays with the saved, frozen statistics:

- ``norm["obs"]``: :class:`~paac.ops.normalize.RunningMoments` of the observations;
- ``norm["reward"]``: the moments of the running discounted return, and ``norm["return"]``
  ``[n_envs]`` that return, environment by environment.

Each rollout is acted on and learnt from with the statistics of the rollouts before it
(acting and the update see the same normalised observations); the update then takes the
rollout's real steps (mask 1) into the statistics. The state is replicated like the
parameters, and the statistics are reduced over the whole ``[T, n_envs]`` batch, so they are
the same on every device and process.
"""

from __future__ import annotations

from collections.abc import Callable

import jax.numpy as jnp

from paac.core.config import Config
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.ops.normalize import (
    discounted_returns,
    init_moments,
    normalize,
    scale,
    update_moments,
)


def normalizes(config: Config) -> bool:
    """Whether ``config`` normalises observations or rewards."""
    return config.normalize_obs or config.normalize_reward


def init_norm(config: Config, spec: EnvSpec) -> dict:
    """The statistics of nothing seen yet: ``{}`` when ``config`` normalises nothing."""
    norm = {}
    if config.normalize_obs:
        norm["obs"] = init_moments(spec.obs_shape)
    if config.normalize_reward:
        norm["reward"] = init_moments()
        norm["return"] = jnp.zeros((config.n_envs,), jnp.float32)
    return norm


def observe(norm: dict, obs, clip: float):
    """``obs`` as the network sees it: normalised with ``norm["obs"]`` if it is there."""
    return normalize(norm["obs"], obs, clip) if "obs" in norm else obs


def normalized(algorithm: Algorithm, config: Config, spec: EnvSpec) -> Algorithm:
    """``algorithm`` with ``config``'s normalisation; ``algorithm`` itself without any.

    ``init`` adds the statistics (:func:`init_norm`); ``act`` normalises the observations;
    ``update`` gives the wrapped update the normalised observations and scaled rewards of
    the batch, then takes the batch into the statistics. ``policy(greedy)`` is the wrapped
    algorithm's and takes normalised observations: evaluation normalises with the saved
    statistics (:func:`frozen_policy`).
    """
    if not normalizes(config):
        return algorithm
    clip, gamma = config.norm_clip, config.gamma

    def init(key):
        return algorithm.init(key)._replace(norm=init_norm(config, spec))

    def act(state: LearnerState, obs, key, *memory):
        return algorithm.act(state, observe(state.norm, obs, clip), key, *memory)

    def update(state: LearnerState, batch: Batch):
        norm, seen = state.norm, dict(state.norm)
        inputs = batch
        if "obs" in norm:
            inputs = inputs._replace(
                obs=normalize(norm["obs"], batch.obs, clip),
                bootstrap_obs=normalize(norm["obs"], batch.bootstrap_obs, clip),
            )
            seen["obs"] = update_moments(norm["obs"], batch.obs, batch.mask)
        if "reward" in norm:
            done = jnp.logical_or(batch.terminated, batch.truncated)
            returns, seen["return"] = discounted_returns(
                norm["return"], batch.reward, done, batch.mask, gamma
            )
            inputs = inputs._replace(reward=scale(norm["reward"], batch.reward, clip))
            seen["reward"] = update_moments(norm["reward"], returns, batch.mask)
        new_state, metrics = algorithm.update(state, inputs)
        return new_state._replace(norm=seen), metrics

    return algorithm._replace(init=init, act=act, update=update)


def frozen_policy(policy: Callable, norm: dict, clip: float) -> Callable:
    """``policy(params, obs, key)`` on raw observations, normalised with ``norm`` (frozen)."""
    if "obs" not in norm:
        return policy

    def act(params, obs, key, *memory):
        return policy(params, observe(norm, obs, clip), key, *memory)

    return act
