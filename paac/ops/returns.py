"""Multi-step returns and advantages for synchronous parallel actor-critic.

All functions here are pure, unbatched over time and time-major: they take one
trajectory of length ``T`` and are ``vmap``-ed over environments by the caller
(``batched_*`` helpers below do exactly that for ``[T, N]`` batches).

Step semantics (EnvPool's next-step auto-reset, see the README):

* Step ``t`` is the transition ``(s_t, a_t) -> (r_t, s_{t+1})``.
  ``v_tm1[t] = V(s_t)`` and ``v_t[t] = V(s_{t+1})``.
* ``discount_t = gamma * (1 - terminated_t)``: a terminated step never bootstraps.
* ``done_t = terminated_t or truncated_t``: the episode ends at ``t``; the return
  does not continue into ``t + 1``. ``s_{t+1}`` is then the *true final
  observation* that EnvPool returns with the done flag, so a truncated step
  bootstraps from ``v_t[t] = V(final observation)`` with ``discount_t = gamma``.
* The step after a done step is EnvPool's reset step: its action is ignored and
  its reward is 0. It is not experience. Because ``done_t`` cuts the recursion,
  nothing of a reset step reaches the returns of the steps before it; the loss
  must give it zero weight through the mask from :func:`valid_mask`.
* The last step of the trajectory bootstraps from ``v_t[T - 1]``, the value of the
  observation that follows the rollout.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

Array = chex.Array


def nstep_returns(r_t: Array, discount_t: Array, v_t: Array, done_t: Array) -> Array:
    """Bootstrapped n-step returns of PAAC (Clemente et al. 2017, Algorithm 1).

    ``G_t = r_t + discount_t * (v_t if done_t or t == T - 1 else G_{t+1})``

    Args:
      r_t: rewards ``[T]``.
      discount_t: ``gamma * (1 - terminated_t)``, shape ``[T]``.
      v_t: values of the observation after each step, ``V(s_{t+1})``, shape ``[T]``.
        Only read where the return bootstraps (done steps and the last step).
      done_t: ``terminated_t or truncated_t``, shape ``[T]`` (bool or 0/1).

    Returns:
      The returns ``G_t``, shape ``[T]``.
    """
    chex.assert_rank([r_t, discount_t, v_t, done_t], 1)
    chex.assert_equal_shape([r_t, discount_t, v_t, done_t])
    done_t = done_t.astype(v_t.dtype)

    def step(g_tp1, xs):
        r, discount, v, done = xs
        g = r + discount * (done * v + (1.0 - done) * g_tp1)
        return g, g

    _, g_t = jax.lax.scan(step, v_t[-1], (r_t, discount_t, v_t, done_t), reverse=True)
    return g_t


def gae(
    r_t: Array,
    discount_t: Array,
    v_tm1: Array,
    v_t: Array,
    done_t: Array,
    lambda_: float | Array,
) -> Array:
    """Generalised advantage estimation (Schulman et al. 2016).

    ``delta_t = r_t + discount_t * v_t - v_tm1``
    ``A_t = delta_t + discount_t * lambda_ * (1 - done_t) * A_{t+1}``, ``A_T = 0``

    ``lambda_ = 1`` gives ``nstep_returns(...) - v_tm1``; ``lambda_ = 0`` the TD error.

    Args:
      r_t: rewards ``[T]``.
      discount_t: ``gamma * (1 - terminated_t)``, ``[T]``.
      v_tm1: values ``V(s_t)`` of the observations the actions were taken in, ``[T]``.
      v_t: values ``V(s_{t+1})`` of the observations after each step, ``[T]``.
      done_t: ``terminated_t or truncated_t``, ``[T]``.
      lambda_: the GAE lambda in ``[0, 1]``.

    Returns:
      The advantages ``A_t``, shape ``[T]``.
    """
    chex.assert_rank([r_t, discount_t, v_tm1, v_t, done_t], 1)
    chex.assert_equal_shape([r_t, discount_t, v_tm1, v_t, done_t])
    done_t = done_t.astype(v_t.dtype)
    delta_t = r_t + discount_t * v_t - v_tm1
    trace_t = discount_t * lambda_ * (1.0 - done_t)

    def step(a_tp1, xs):
        delta, trace = xs
        a = delta + trace * a_tp1
        return a, a

    _, a_t = jax.lax.scan(step, jnp.zeros_like(v_t[-1]), (delta_t, trace_t), reverse=True)
    return a_t


def valid_mask(done_t: Array, done_before: Array) -> Array:
    """Weight 1 for real experience, 0 for EnvPool's reset steps.

    Step ``t`` is a reset step when the step before it was done. Time-major,
    works on ``[T]`` or ``[T, N]``.

    Args:
      done_t: ``terminated_t or truncated_t`` of the rollout, ``[T, ...]``.
      done_before: the done flag of the step just before the rollout, ``[...]``.

    Returns:
      Float mask ``[T, ...]``.
    """
    prev = jnp.concatenate([jnp.asarray(done_before)[None], jnp.asarray(done_t)[:-1]], axis=0)
    return 1.0 - prev.astype(jnp.float32)


def batched_nstep_returns(r_t, discount_t, v_t, done_t):
    """:func:`nstep_returns` over a time-major ``[T, N]`` batch."""
    return jax.vmap(nstep_returns, in_axes=1, out_axes=1)(r_t, discount_t, v_t, done_t)


def batched_gae(r_t, discount_t, v_tm1, v_t, done_t, lambda_):
    """:func:`gae` over a time-major ``[T, N]`` batch."""
    return jax.vmap(gae, in_axes=(1, 1, 1, 1, 1, None), out_axes=1)(
        r_t, discount_t, v_tm1, v_t, done_t, lambda_
    )
