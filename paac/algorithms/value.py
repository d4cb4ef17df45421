"""Value-based methods of the same family (Mnih et al. 2016) in PAAC's synchronous loop.

``--algo nstep_q | q | sarsa``: a Q head on the same torsos, a target network refreshed
every ``target_interval`` agent steps, and epsilon-greedy acting with one final epsilon
per environment, drawn once from ``final_epsilons`` with ``final_epsilon_probs`` and
reached by annealing linearly from 1 over ``epsilon_anneal_steps``. Targets, with
``Q-`` the target network and the step semantics of :mod:`paac.ops.returns`:

* one-step Q: ``r_t + discount_t * max_a Q-(s_{t+1}, a)``
* one-step Sarsa: ``r_t + discount_t * Q-(s_{t+1}, a')``, ``a'`` the action actually
  taken in ``s_{t+1}`` (the loop acts one step ahead at the end of each rollout)
* n-step Q: ``nstep_returns`` bootstrapped from ``max_a Q-(s_T, a)``.

A one-step target is the n-step recursion cut after every step, so all three reuse
:func:`paac.ops.returns.batched_nstep_returns`: termination, truncation (bootstrap from the
true final observation) and EnvPool's reset steps are handled exactly as for a2c.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from paac.algorithms.common import dummy_obs, make_lr_schedule, make_optimizer
from paac.core.config import Config
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.ops.losses import explained_variance, masked_mean
from paac.ops.returns import batched_nstep_returns


def draw_final_epsilons(config: Config, key: jax.Array, n: int) -> jax.Array:
    """One final epsilon per environment, drawn from ``final_epsilons``."""
    values = jnp.asarray(config.final_epsilons, jnp.float32)
    probs = jnp.asarray(config.final_epsilon_probs, jnp.float32)
    return jax.random.choice(key, values, shape=(n,), p=probs)


def epsilon(config: Config, final_epsilon: jax.Array, step: jax.Array) -> jax.Array:
    """The exploration rate at agent step ``step``: annealed linearly to ``final_epsilon``.

    Linear from 1 at step 0 to ``final_epsilon`` at ``epsilon_anneal_steps``, then flat
    (``epsilon_anneal_steps = 0``: the final epsilon from the start).
    """
    if config.epsilon_anneal_steps == 0:
        return jnp.asarray(final_epsilon, jnp.float32)
    frac = jnp.minimum(jnp.asarray(step, jnp.float32) / config.epsilon_anneal_steps, 1.0)
    return 1.0 + (final_epsilon - 1.0) * frac


def q_targets(
    algo: str,
    q_next: jax.Array,
    next_action: jax.Array,
    reward: jax.Array,
    discount: jax.Array,
    done: jax.Array,
) -> jax.Array:
    """Targets ``[T, N]`` from the target network's ``Q-(s_{t+1}, .)`` ``[T, N, A]``.

    ``next_action[t]`` is the action taken in ``s_{t+1}`` (read by Sarsa only).

    All three are :func:`paac.ops.returns.batched_nstep_returns` of
    ``v_t = max_a Q-(s_{t+1}, a)`` (Sarsa: ``Q-(s_{t+1}, next_action)``); the one-step
    methods cut the recursion after every step, n-step Q at done steps and at the
    rollout's last step.

    Args:
      algo: ``nstep_q`` | ``q`` | ``sarsa``.
      q_next: the target network's action values ``Q-(s_{t+1}, .)``, ``[T, N, A]``.
      next_action: integer actions taken in ``s_{t+1}``, ``[T, N]``.
      reward: rewards ``r_t``, ``[T, N]``.
      discount: ``gamma * (1 - terminated_t)``, ``[T, N]``.
      done: ``terminated_t or truncated_t``, ``[T, N]``.

    Returns:
      The targets ``[T, N]``.
    """
    if algo == "sarsa":
        v_t = jnp.take_along_axis(q_next, next_action[..., None], axis=-1)[..., 0]
    else:
        v_t = jnp.max(q_next, axis=-1)
    cut = done if algo == "nstep_q" else jnp.ones_like(done)
    return batched_nstep_returns(reward, discount, v_t, cut)


def make_value_algorithm(config: Config, network, spec: EnvSpec) -> Algorithm:
    """n-step Q, one-step Q or one-step Sarsa (``config.algo``) as an :class:`Algorithm`."""
    algo = config.algo
    optimizer = make_optimizer(config)
    schedule = make_lr_schedule(config)
    scale = config.effective_loss_scale
    dummy = dummy_obs(spec)
    n_actions = spec.num_actions

    def _steps(update_count):
        """Agent steps after ``update_count`` updates (int32: total_steps < 2**31)."""
        return update_count * config.batch_size

    def init(key):
        net_key, eps_key = jax.random.split(key)
        params = network.init(net_key, dummy)
        extra = {
            "target_params": params,
            "final_epsilon": draw_final_epsilons(config, eps_key, config.n_envs),
        }
        return LearnerState(params, optimizer.init(params), jnp.zeros((), jnp.int32), extra)

    def act(state: LearnerState, obs, key):
        key, explore_key, random_key = jax.random.split(key, 3)
        greedy = jnp.argmax(network.apply(state.params, obs), axis=-1).astype(jnp.int32)
        eps = epsilon(config, state.extra["final_epsilon"], _steps(state.update_count))
        explore = jax.random.uniform(explore_key, greedy.shape) < eps
        random = jax.random.randint(random_key, greedy.shape, 0, n_actions, jnp.int32)
        return jnp.where(explore, random, greedy), key

    def policy(greedy: bool):
        def act_greedy(params, obs, key):  # evaluation of a value-based agent is greedy
            return jnp.argmax(network.apply(params, obs), axis=-1).astype(jnp.int32), key

        return act_greedy

    def loss_fn(params, batch: Batch, returns):
        q = network.apply(params, batch.obs)  # [T, N, A]
        q_a = jnp.take_along_axis(q, batch.action[..., None], axis=-1)[..., 0]
        target = jax.lax.stop_gradient(jnp.where(batch.mask > 0, returns, q_a))
        loss = masked_mean(0.5 * jnp.square(target - q_a), batch.mask)
        return scale * loss, (loss, q_a)

    def update(state: LearnerState, batch: Batch):
        target_params = state.extra["target_params"]
        next_obs = jnp.concatenate([batch.obs[1:], batch.bootstrap_obs[None]], axis=0)
        q_next = jax.lax.stop_gradient(network.apply(target_params, next_obs))
        if algo == "sarsa":
            next_action = jnp.concatenate([batch.action[1:], batch.next_action[None]], axis=0)
        else:
            next_action = jnp.zeros_like(batch.action)
        discount = config.gamma * (1.0 - batch.terminated.astype(jnp.float32))
        done = jnp.logical_or(batch.terminated, batch.truncated)
        returns = q_targets(algo, q_next, next_action, batch.reward, discount, done)
        grads, (loss, q_a) = jax.grad(loss_fn, has_aux=True)(state.params, batch, returns)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        count = state.update_count + 1
        # Refresh the target network when this update crosses a multiple of target_interval.
        refresh = _steps(count) // config.target_interval > (
            _steps(state.update_count) // config.target_interval
        )
        target_params = jax.tree.map(
            lambda new, old: jnp.where(refresh, new, old), params, target_params
        )
        eps = epsilon(config, state.extra["final_epsilon"], _steps(state.update_count))
        metrics = {
            "value_loss": loss,
            "q_mean": masked_mean(q_a, batch.mask),
            "epsilon": jnp.mean(eps),
            "grad_norm": optax.tree.norm(grads),
            "lr": schedule(state.update_count),
            "explained_variance": explained_variance(q_a, returns, batch.mask),
        }
        extra = {**state.extra, "target_params": target_params}
        new_state = state._replace(
            params=params, opt_state=opt_state, update_count=count, extra=extra
        )
        return new_state, metrics

    return Algorithm(init, act, update, policy, lookahead=algo == "sarsa")
