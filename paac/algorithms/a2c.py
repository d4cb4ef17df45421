"""PAAC's advantage actor-critic: its gradient, its metrics and its averaged update.

Factories close over the static configuration and return pure functions::

    network = make_network("nips", num_actions)
    state = init_state(config, network, spec, jax.random.PRNGKey(0))
    act = jax.jit(make_act(network))
    update = jax.jit(make_update(config, network))
    actions, key = act(state.params, obs, key)
    state, metrics = update(state, batch)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax

from paac.algorithms.common import (
    init_params,
    is_recurrent,
    make_act,
    make_greedy_act,
    make_lr_schedule,
    make_optimizer,
    policy_distribution,
)
from paac.core.config import Config
from paac.core.types import Algorithm, Batch, EnvSpec, LearnerState
from paac.ops.losses import a2c_loss, explained_variance
from paac.ops.returns import batched_gae, batched_nstep_returns


def make_a2c(config: Config, network, spec: EnvSpec) -> Algorithm:
    """PAAC's advantage actor-critic as an :class:`Algorithm`."""
    optimizer = make_optimizer(config)
    sample = make_act(network)

    def init(key):
        params = init_params(network, spec, key)
        return LearnerState(params, optimizer.init(params), jnp.zeros((), jnp.int32), {})

    def act(state, obs, key, *memory):
        return sample(state.params, obs, key, *memory)

    def policy(greedy: bool):
        return make_greedy_act(network) if greedy else make_act(network)

    memory = network.initial_memory if is_recurrent(network) else None
    return Algorithm(init, act, make_update(config, network), policy, memory=memory)


def make_forward(network) -> Callable:
    """``forward(params, batch) -> (logits [T, N, P], values [T, N], v_boot [N])``.

    ``logits`` is the policy head's output (logits, or a Gaussian's ``[mean, log_std]``).

    ``v_boot`` is ``V(bootstrap_obs)``. A recurrent network is run through the rollout from
    the memory it started with, zeroed at the episode starts (``batch.start``) as while
    acting, and ``v_boot`` from the memory after the last step: truncated backpropagation
    through time over ``t_max`` steps.
    """
    if is_recurrent(network):

        def forward(params, batch: Batch):
            logits, values, memory = network.apply(
                params, batch.obs, batch.memory, batch.start[:-1]
            )
            _, v_boot, _ = network.apply(
                params, batch.bootstrap_obs[None], memory, batch.start[-1:]
            )
            return logits, values, v_boot[0]

        return forward

    def forward(params, batch: Batch):
        logits, values = network.apply(params, batch.obs)  # [T, N, A], [T, N]
        _, v_boot = network.apply(params, batch.bootstrap_obs)
        return logits, values, v_boot

    return forward


def make_advantage_fn(config: Config) -> Callable:
    """``(reward, discount, v_tm1, v_t, done) -> (advantages, returns)`` on ``[T, N]``.

    Pure n-step returns when ``gae_lambda`` is None, GAE(lambda) otherwise.

    Args:
      config: the run's config; only ``gae_lambda`` is read.

    Returns:
      A function of time-major ``[T, N]`` arrays (the arguments of
      :func:`paac.ops.returns.gae`): with ``gae_lambda`` None,
      ``returns = batched_nstep_returns(reward, discount, v_t, done)`` and
      ``advantages = returns - v_tm1``; otherwise
      ``advantages = batched_gae(..., gae_lambda)`` and ``returns = advantages + v_tm1``.
    """
    lambda_ = config.gae_lambda

    def advantages(reward, discount, v_tm1, v_t, done):
        if lambda_ is None:
            returns = batched_nstep_returns(reward, discount, v_t, done)
            return returns - v_tm1, returns
        adv = batched_gae(reward, discount, v_tm1, v_t, done, lambda_)
        return adv, adv + v_tm1

    return advantages


def make_a2c_grad(config: Config, network) -> Callable:
    """``grad(params, batch) -> (grads, (terms, values, returns))``: PAAC's gradient.

    The loss is the masked batch mean of the A2C loss times ``loss_scale`` (``t_max`` by
    default, PAAC's convention). Values of the observations after each step come from the
    same forward pass (``V(obs[t + 1])``) and, for the last step, from
    ``V(bootstrap_obs)``, all at ``params`` (:func:`make_forward`); they are targets only
    (no gradient).
    ``values`` and ``returns`` are ``[T, N]``; ``terms`` is :class:`A2CLossTerms`.

    Args:
      config: the run's config (``gamma``, ``gae_lambda``, ``entropy_coef``,
        ``value_coef``, and ``loss_scale`` or, when it is None, ``t_max``).
      network: an actor-critic module, ``apply(params, obs) -> (logits, values)``.

    Returns:
      ``grad(params, batch)``: the gradient of the scaled loss with respect to
      ``params`` (a pytree like ``params``), and ``(terms, values, returns)``, where
      ``values`` are ``V(obs[t])`` and ``returns`` the value targets, both ``[T, N]``.
    """
    advantage_fn = make_advantage_fn(config)
    scale = config.effective_loss_scale
    forward = make_forward(network)
    dist = policy_distribution(network)

    def loss_fn(params, batch: Batch):
        logits, values, v_boot = forward(params, batch)
        v_boot = jax.lax.stop_gradient(v_boot)
        v_tm1 = jax.lax.stop_gradient(values)
        v_t = jnp.concatenate([v_tm1[1:], v_boot[None]], axis=0)
        discount = config.gamma * (1.0 - batch.terminated.astype(jnp.float32))
        done = jnp.logical_or(batch.terminated, batch.truncated)
        adv, returns = advantage_fn(batch.reward, discount, v_tm1, v_t, done)
        loss, terms = a2c_loss(
            logits,
            values,
            batch.action,
            adv,
            returns,
            batch.mask,
            config.entropy_coef,
            config.value_coef,
            dist,
        )
        return scale * loss, (terms, v_tm1, returns)

    def grad(params, batch: Batch):
        return jax.grad(loss_fn, has_aux=True)(params, batch)

    return grad


def a2c_metrics(terms, grad_norm, lr, values, returns, mask) -> dict:
    """The logged numbers of an A2C update."""
    return {
        "policy_loss": terms.policy_loss,
        "value_loss": terms.value_loss,
        "entropy": terms.entropy,
        "grad_norm": grad_norm,
        "lr": lr,
        "explained_variance": explained_variance(values, returns, mask),
    }


def make_update(config: Config, network) -> Callable:
    """``update(state, batch) -> (state, metrics)``: one averaged PAAC gradient step.

    The gradient is :func:`make_a2c_grad`'s, at the current parameters.

    Args:
      config: the run's config: the loss's settings, and the optimiser's and learning-rate
        schedule's (:mod:`paac.algorithms.common`).
      network: an actor-critic module, ``apply(params, obs) -> (logits, values)``.

    Returns:
      ``update(state, batch)``: the :class:`LearnerState` after one optimiser step
      (global-norm clipping, then RMSProp) with ``update_count`` one higher, and the
      metrics of :func:`a2c_metrics` (``grad_norm`` before clipping, ``lr`` of this step).
    """
    optimizer = make_optimizer(config)
    schedule = make_lr_schedule(config)
    grad_fn = make_a2c_grad(config, network)

    def update(state: LearnerState, batch: Batch):
        grads, (terms, values, returns) = grad_fn(state.params, batch)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        lr = schedule(state.update_count)
        metrics = a2c_metrics(terms, optax.tree.norm(grads), lr, values, returns, batch.mask)
        return state._replace(
            params=params, opt_state=opt_state, update_count=state.update_count + 1
        ), metrics

    return update
