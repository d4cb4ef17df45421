"""The learner: its state pytree, action selection and the jitted PAAC update.

Factories close over the static configuration and return pure functions::

    network = make_network("nips", num_actions)
    state = init_state(config, network, spec, jax.random.PRNGKey(0))
    act = jax.jit(make_act(network))
    update = jax.jit(make_update(config, network))
    actions, key = act(state.params, obs, key)
    state, metrics = update(state, batch)
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from paac.config import VALUE_ALGOS, Config, ConfigError, flag
from paac.envs import EnvSpec
from paac.losses import a2c_loss, explained_variance
from paac.returns import batched_gae, batched_nstep_returns

Params = Any


class LearnerState(NamedTuple):
    """Everything the update changes."""

    params: Params
    opt_state: optax.OptState
    update_count: chex.Array  # int32 scalar: updates applied so far
    extra: dict = {}  # per-algorithm state: {} for a2c; target network and epsilons for Q


class Batch(NamedTuple):
    """One rollout of ``T = t_max`` steps of ``N = n_envs`` environments, time-major.

    Step ``t`` took ``action[t]`` in ``obs[t]`` and received ``reward[t]``,
    ``terminated[t]``, ``truncated[t]``. ``mask[t]`` is 0 on EnvPool's reset steps
    (the step after a done step), 1 on real experience. ``bootstrap_obs`` is the
    observation after the last step.
    """

    obs: chex.Array  # [T, N, *obs_shape]
    action: chex.Array  # [T, N] int32
    reward: chex.Array  # [T, N] float32
    terminated: chex.Array  # [T, N] bool
    truncated: chex.Array  # [T, N] bool
    mask: chex.Array  # [T, N] float32
    bootstrap_obs: chex.Array  # [N, *obs_shape]
    next_action: chex.Array | None = None  # [N]: action taken at bootstrap_obs (lookahead)


class Algorithm(NamedTuple):
    """How an algorithm plugs into the one training loop; every function is pure and jittable.

    ``init(key) -> LearnerState``; ``act(state, obs, key) -> (actions, key)`` for the
    ``n_envs`` environments; ``update(state, batch) -> (state, metrics)``;
    ``policy(greedy)`` returns ``(params, obs, key) -> (actions, key)`` for evaluation from
    parameters alone. With ``lookahead`` the loop also acts on each rollout's bootstrap
    observation (``Batch.next_action``) and takes that action first in the next rollout:
    Sarsa's ``a'`` is the action actually taken.
    """

    init: Callable
    act: Callable
    update: Callable
    policy: Callable
    lookahead: bool = False


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


def _dummy_obs(spec: EnvSpec) -> jnp.ndarray:
    return jnp.zeros((1,) + spec.obs_shape, spec.obs_dtype)


def init_state(config: Config, network, spec: EnvSpec, key: chex.PRNGKey) -> LearnerState:
    """Fresh learner state of ``config.algo`` for ``network`` on observations of ``spec``.

    Jitted, with single-threaded host BLAS: orthogonal initialisation runs QR
    decompositions on the host's OpenBLAS (through SciPy's LAPACK on CPU), and with its
    default two threads competing with XLA's pool a 3136 x 512 QR (the nature torso's
    dense layer) took 10 s on a 2-core machine, against 0.2 s on one thread. Same values.
    """
    import scipy.linalg.cython_lapack  # noqa: F401  (load it so the limit below covers it)
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, user_api="blas"):
        fresh = jax.jit(make_algorithm(config, network, spec).init)
        return jax.block_until_ready(fresh(key))


def state_template(config: Config, network, spec: EnvSpec) -> LearnerState:
    """The shapes and dtypes of :func:`init_state`'s result, computing nothing."""
    return jax.eval_shape(make_algorithm(config, network, spec).init, jax.random.PRNGKey(0))


def device_memory(device) -> int | None:
    """Bytes of memory ``device`` has: its allocator's limit, or a CPU's physical memory
    (or this process's cgroup limit, when lower)."""
    stats = device.memory_stats()
    if stats and "bytes_limit" in stats:
        return int(stats["bytes_limit"])
    if device.platform != "cpu":
        return None
    limits = [os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")]
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                limits.append(int(f.read().strip()))
        except (OSError, ValueError):  # absent, or "max"
            pass
    return min(limits)


# An update holds the learner state about three times over: the state it was given (not
# donated), the new one, and the gradients and optimiser temporaries (XLA's memory analysis
# of the a3c and ga3c updates: 2.3-2.6x the state).
UPDATE_MEMORY_FACTOR = 3


def check_state_fits(config: Config, network, spec: EnvSpec, device=None) -> None:
    """Refuses a learner state that an update could not hold in the device's memory, naming
    the setting that makes it so (the async modes hold many parameter versions), instead of
    an allocation failure deep in XLA at the first update, or the OOM killer."""
    device = device or jax.local_devices()[0]
    template = state_template(config, network, spec)
    size = lambda tree: sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    state, have = size(template), device_memory(device)
    if have is None or UPDATE_MEMORY_FACTOR * state <= have:
        return
    copies = ""
    if config.mode == "ga3c":
        copies = f"{flag('policy_lag')}={config.policy_lag} keeps {config.policy_lag + 1} "
    elif config.mode == "a3c" and config.staleness == "round_robin":
        copies = f"{flag('workers')}={config.num_workers} keeps {2 * config.num_workers} "
    elif config.mode == "a3c":
        copies = (
            f"{flag('max_staleness')}={config.max_staleness} with "
            f"{flag('workers')}={config.num_workers} keeps "
            f"{config.max_staleness + 1 + config.num_workers} "
        )
    if copies:
        copies = f" ({copies}copies of the {_bytes(size(template.params))} of parameters)"
    raise ConfigError(
        f"the learner state is {_bytes(state)}{copies}, and an update holds it about "
        f"{UPDATE_MEMORY_FACTOR} times over: more than the {_bytes(have)} of memory of "
        f"{device.device_kind} {device.id}"
    )


def _bytes(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def network_for(config: Config, spec: EnvSpec):
    """The network ``config.algo`` needs: actor-critic heads, or a Q head."""
    from paac.networks import make_network

    head = "q" if config.algo in VALUE_ALGOS else "actor_critic"
    return make_network(
        config.arch, spec.num_actions, config.conv_impl, head, config.policy_init_scale, config.init
    )


def make_algorithm(config: Config, network, spec: EnvSpec) -> Algorithm:
    """The :class:`Algorithm` of ``config.algo`` (a2c, nstep_q, q or sarsa) in
    ``config.mode`` (sync, or the a3c and ga3c emulations for a2c)."""
    if config.algo in VALUE_ALGOS:
        from paac.value import make_value_algorithm

        return make_value_algorithm(config, network, spec)
    if config.mode == "a3c":
        from paac.asynchronous import make_a3c

        return make_a3c(config, network, spec)
    if config.mode == "ga3c":
        from paac.asynchronous import make_ga3c

        return make_ga3c(config, network, spec)
    return make_a2c(config, network, spec)


def make_a2c(config: Config, network, spec: EnvSpec) -> Algorithm:
    """PAAC's advantage actor-critic as an :class:`Algorithm`."""
    optimizer = make_optimizer(config)
    dummy = _dummy_obs(spec)
    sample = make_act(network)

    def init(key):
        params = network.init(key, dummy)
        return LearnerState(params, optimizer.init(params), jnp.zeros((), jnp.int32), {})

    def act(state, obs, key):
        return sample(state.params, obs, key)

    def policy(greedy: bool):
        return make_greedy_act(network) if greedy else make_act(network)

    return Algorithm(init, act, make_update(config, network), policy)


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


def make_advantage_fn(config: Config) -> Callable:
    """``(reward, discount, v_tm1, v_t, done) -> (advantages, returns)`` on ``[T, N]``.

    Pure n-step returns when ``gae_lambda`` is None, GAE(lambda) otherwise.
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
    ``V(bootstrap_obs)``, all at ``params``; they are targets only (no gradient).
    ``values`` and ``returns`` are ``[T, N]``; ``terms`` is :class:`A2CLossTerms`.
    """
    advantage_fn = make_advantage_fn(config)
    scale = config.effective_loss_scale

    def loss_fn(params, batch: Batch, v_boot):
        logits, values = network.apply(params, batch.obs)  # [T, N, A], [T, N]
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
        )
        return scale * loss, (terms, v_tm1, returns)

    def grad(params, batch: Batch):
        _, v_boot = network.apply(params, batch.bootstrap_obs)
        v_boot = jax.lax.stop_gradient(v_boot)
        return jax.grad(loss_fn, has_aux=True)(params, batch, v_boot)

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


def num_params(params: Params) -> int:
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
