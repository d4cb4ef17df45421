"""Running moments, and the observation and reward normalisation built on them.

As Stable-Baselines3's ``VecNormalize``: observations are normalised by the running mean and
variance of the observations seen, then clipped; rewards are divided by the running
standard deviation of the discounted return (not of the rewards), then clipped. Only real
steps count: a step with mask 0 (EnvPool's reset step) adds nothing to any statistic.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

MOMENTS_EPSILON = 1e-4
"""The count the moments start with (VecNormalize's): the first batch all but replaces them."""
NORM_EPSILON = 1e-8
"""Added to the variance before its square root is taken."""


class RunningMoments(NamedTuple):
    """The mean and (population) variance of the values seen so far, and their count."""

    mean: chex.Array  # [*shape] float32
    var: chex.Array  # [*shape] float32
    count: chex.Array  # float32 scalar


def init_moments(shape: tuple[int, ...] = ()) -> RunningMoments:
    """Moments of nothing seen yet: mean 0, variance 1, count :data:`MOMENTS_EPSILON`."""
    return RunningMoments(
        jnp.zeros(shape, jnp.float32),
        jnp.ones(shape, jnp.float32),
        jnp.asarray(MOMENTS_EPSILON, jnp.float32),
    )


def update_moments(moments: RunningMoments, x: chex.Array, mask: chex.Array) -> RunningMoments:
    """The moments with the values ``x[i]`` whose ``mask[i]`` is 1 taken in.

    Chan et al.'s parallel combination of the running moments with the batch's, so that
    the result does not depend on how the values were split into batches.

    Args:
      moments: the moments so far, of values of shape ``S``.
      x: ``[*B, *S]`` values.
      mask: ``[*B]``, 1 for a value to take in, 0 for one to ignore.

    Returns:
      The combined moments; ``moments`` unchanged when the mask is all 0.
    """
    shape = moments.mean.shape
    x = jnp.asarray(x, jnp.float32).reshape((-1,) + shape)
    w = jnp.asarray(mask, jnp.float32).reshape((-1,) + (1,) * len(shape))
    n = jnp.sum(w)
    safe_n = jnp.maximum(n, 1.0)
    batch_mean = jnp.sum(w * x, axis=0) / safe_n
    batch_var = jnp.sum(w * jnp.square(x - batch_mean), axis=0) / safe_n
    total = moments.count + n
    delta = batch_mean - moments.mean
    mean = moments.mean + delta * n / total
    m2 = moments.var * moments.count + batch_var * n + jnp.square(delta) * moments.count * n / total
    return RunningMoments(mean, m2 / total, total)


def normalize(moments: RunningMoments, x: chex.Array, clip: float) -> chex.Array:
    """``clip((x - mean) / sqrt(var + eps), -clip, clip)`` in float32; ``x`` is ``[..., *S]``."""
    z = (jnp.asarray(x, jnp.float32) - moments.mean) / jnp.sqrt(moments.var + NORM_EPSILON)
    return jnp.clip(z, -clip, clip)


def scale(moments: RunningMoments, x: chex.Array, clip: float) -> chex.Array:
    """``clip(x / sqrt(var + eps), -clip, clip)``: rewards over the return's running std."""
    return jnp.clip(x / jnp.sqrt(moments.var + NORM_EPSILON), -clip, clip)


def discounted_returns(
    running: chex.Array,
    reward: chex.Array,
    done: chex.Array,
    mask: chex.Array,
    gamma: float,
) -> tuple[chex.Array, chex.Array]:
    """The running discounted return of each environment, step by step (VecNormalize's).

    ``G_t = gamma * G_{t-1} + r_t`` on real steps, starting from ``running``; after a
    done step the next episode starts again from 0, and a reset step (mask 0) leaves it at
    0 (its reward is 0 and it is no experience).

    Args:
      running: ``[N]``: each environment's return before the first step.
      reward, done, mask: ``[T, N]``: the rollout's rewards, done flags (terminated or
        truncated) and masks.
      gamma: the discount.

    Returns:
      ``(returns [T, N], running [N])``: ``G_t`` at every step, and the return the next
      rollout starts from.
    """

    def step(g, xs):
        r, d, m = xs
        g = jnp.where(m > 0, gamma * g + r, 0.0)
        return jnp.where(d, 0.0, g), g

    running, returns = jax.lax.scan(
        step,
        jnp.asarray(running, jnp.float32),
        (jnp.asarray(reward, jnp.float32), jnp.asarray(done, bool), jnp.asarray(mask)),
    )
    return returns, running
