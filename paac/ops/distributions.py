"""The policies' action distributions (pure, jittable): categorical and diagonal Gaussian.

A policy head gives one array of distribution parameters per state, ``[..., P]``:

* :data:`CATEGORICAL`: ``P = A`` logits over ``A`` discrete actions; an action is an int32
  scalar per state.
* :data:`GAUSSIAN`: ``P = 2 * D``, the mean then the log standard deviation of each of the
  ``D`` action dimensions, independent; an action is a float32 vector ``[..., D]``. The
  sampled action is kept as drawn (unclipped): its log-probability is the one the gradient
  needs. The environment boundary (:class:`paac.run.envs.ActionBounds`) fits it to the
  task's bounds.

Every algorithm reads its policy through a :class:`Distribution`, so the losses, acting and
evaluation are written once for both kinds of action.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


class Distribution(NamedTuple):
    """An action distribution, as pure functions of the policy head's output ``p``.

    ``sample(key, p) -> actions``; ``mode(p) -> actions`` (the greedy action: the most
    probable one, or the Gaussian's mean); ``log_prob(p, actions) -> [...]``;
    ``entropy(p) -> [...]``. ``continuous`` says whether actions are vectors of floats.
    """

    sample: Callable
    mode: Callable
    log_prob: Callable
    entropy: Callable
    continuous: bool


def _categorical_sample(key, logits):
    return jax.random.categorical(key, logits).astype(jnp.int32)


def _categorical_mode(logits):
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)


def _categorical_log_prob(logits, actions):
    log_probs = jax.nn.log_softmax(logits)
    index = actions[..., None].astype(jnp.int32)
    return jnp.take_along_axis(log_probs, index, axis=-1)[..., 0]


def _categorical_entropy(logits):
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.sum(jnp.exp(log_probs) * log_probs, axis=-1)


CATEGORICAL = Distribution(
    _categorical_sample,
    _categorical_mode,
    _categorical_log_prob,
    _categorical_entropy,
    continuous=False,
)
"""Discrete actions from logits ``[..., A]``."""


def gaussian_split(p) -> tuple[jax.Array, jax.Array]:
    """``(mean, log_std)``, each ``[..., D]``, of a Gaussian head's output ``[..., 2 * D]``."""
    d = p.shape[-1] // 2
    return p[..., :d], p[..., d:]


def _gaussian_sample(key, p):
    mean, log_std = gaussian_split(p)
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    return mean + jnp.exp(log_std) * noise


def _gaussian_mode(p):
    return gaussian_split(p)[0]


def _gaussian_log_prob(p, actions):
    mean, log_std = gaussian_split(p)
    z = (actions.astype(mean.dtype) - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * jnp.square(z) - log_std - _HALF_LOG_2PI, axis=-1)


def _gaussian_entropy(p):
    _, log_std = gaussian_split(p)
    return jnp.sum(log_std + 0.5 + _HALF_LOG_2PI, axis=-1)


GAUSSIAN = Distribution(
    _gaussian_sample,
    _gaussian_mode,
    _gaussian_log_prob,
    _gaussian_entropy,
    continuous=True,
)
"""Continuous actions from a diagonal Gaussian: ``concatenate([mean, log_std], -1)``."""


def distribution(continuous: bool) -> Distribution:
    """:data:`GAUSSIAN` for continuous actions, :data:`CATEGORICAL` for discrete ones."""
    return GAUSSIAN if continuous else CATEGORICAL
