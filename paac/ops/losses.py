"""The advantage actor-critic loss of PAAC (pure, jittable)."""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from paac.ops.distributions import CATEGORICAL, Distribution

Array = chex.Array


class A2CLossTerms(NamedTuple):
    """The parts of :func:`a2c_loss`, each a masked mean over the batch."""

    policy_loss: Array
    value_loss: Array
    entropy: Array


def masked_mean(x: Array, mask: Array) -> Array:
    """``sum(mask * x) / max(sum(mask), 1)``: the mean over the real (unmasked) steps.

    Masked entries are selected away, not multiplied by 0, so even inf or nan there
    cannot reach the result.

    Args:
      x: values, any shape.
      mask: weights of the same shape as ``x``; 0 marks a step that does not count.

    Returns:
      The masked mean, a scalar (0 when the mask is all zeros).
    """
    return jnp.sum(jnp.where(mask > 0, mask * x, 0.0)) / jnp.maximum(jnp.sum(mask), 1.0)


def a2c_loss(
    logits: Array,
    values: Array,
    actions: Array,
    advantages: Array,
    returns: Array,
    mask: Array,
    entropy_coef: float,
    value_coef: float,
    distribution: Distribution = CATEGORICAL,
) -> tuple[Array, A2CLossTerms]:
    """Advantage actor-critic loss, averaged over the real steps of the batch.

    With ``m`` the mask (0 on EnvPool's reset steps) and ``E_m`` the mean over the
    steps where ``m = 1``::

        policy_loss = -E_m[log pi(a|s) * stop_gradient(A)]
        value_loss  =  E_m[0.5 * (stop_gradient(G) - V(s))^2]
        entropy     =  E_m[H(pi(.|s))]
        loss = policy_loss + value_coef * value_loss - entropy_coef * entropy

    With PAAC's ``value_coef = 0.5`` each sample contributes ``0.25 * (G - V)^2``.
    Masked steps change nothing: not the loss, not its gradient.

    Args:
      logits: the policy head's output ``[B, P]`` (any leading batch shape ``[..., P]``):
        logits ``[..., A]`` for the categorical policy, ``[mean, log_std]`` ``[..., 2 * D]``
        for the Gaussian one (:mod:`paac.ops.distributions`).
      values: state values ``[B]`` (the same leading shape).
      actions: actions taken: integers ``[B]``, or float vectors ``[B, D]`` for a Gaussian.
      advantages: advantage estimates ``[B]`` (gradient is stopped).
      returns: value targets ``[B]`` (gradient is stopped).
      mask: 1.0 for real experience, 0.0 for reset steps, ``[B]``.
      entropy_coef: weight of the entropy bonus.
      value_coef: weight of the value loss.
      distribution: the policy's :class:`~paac.ops.distributions.Distribution`
        (categorical by default).

    Returns:
      ``(loss, A2CLossTerms)``.
    """
    chex.assert_equal_shape([values, advantages, returns, mask])
    chex.assert_equal_shape_prefix([logits, values], values.ndim)
    action_shape = (logits.shape[-1] // 2,) if distribution.continuous else ()
    chex.assert_shape(actions, values.shape + action_shape)
    mask = mask.astype(logits.dtype)
    # Masked steps may hold any garbage; neutralise it before it reaches a product.
    logits = jnp.where(mask[..., None] > 0, logits, 0.0)
    real = (mask > 0).reshape(mask.shape + (1,) * (actions.ndim - mask.ndim))
    actions = jnp.where(real, actions, jnp.zeros((), actions.dtype))
    logp_a = distribution.log_prob(logits, actions)
    adv = jax.lax.stop_gradient(jnp.where(mask > 0, advantages, 0.0))
    target = jax.lax.stop_gradient(jnp.where(mask > 0, returns, values))
    policy_loss = masked_mean(-logp_a * adv, mask)
    value_loss = masked_mean(0.5 * jnp.square(target - values), mask)
    entropy = masked_mean(distribution.entropy(logits), mask)
    loss = policy_loss + value_coef * value_loss - entropy_coef * entropy
    return loss, A2CLossTerms(policy_loss, value_loss, entropy)


def explained_variance(predictions: Array, targets: Array, mask: Array) -> Array:
    """``1 - Var[targets - predictions] / Var[targets]`` over the unmasked steps.

    nan when the targets have no variance (nothing to explain).

    Args:
      predictions: predicted values, e.g. ``V(s_t)`` ``[T, N]``.
      targets: the targets they predict, e.g. the returns, same shape.
      mask: 1.0 for real experience, 0.0 for reset steps, same shape.

    Returns:
      The explained variance, a scalar (1 for perfect predictions, nan without variance).
    """
    mean_t = masked_mean(targets, mask)
    var_t = masked_mean(jnp.square(targets - mean_t), mask)
    err = targets - predictions
    mean_e = masked_mean(err, mask)
    var_e = masked_mean(jnp.square(err - mean_e), mask)
    return jnp.where(var_t > 0, 1.0 - var_e / jnp.maximum(var_t, 1e-12), jnp.nan)
