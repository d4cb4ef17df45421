"""The types every layer shares.

An environment's spec, the learner state, a rollout batch and the algorithm contract of the
one training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import numpy as np
import optax

Params = Any


class EnvSpec(NamedTuple):
    """What the learner needs to know about an environment.

    ``num_actions`` is ``n`` for a ``Discrete(n)`` action space, and the size ``D`` of the
    action vector for a continuous one (``continuous``: a ``Box`` of shape ``(D,)``).
    """

    obs_shape: tuple[int, ...]
    obs_dtype: np.dtype
    num_actions: int
    is_image: bool
    continuous: bool = False


class LearnerState(NamedTuple):
    """Everything the update changes."""

    params: Params
    opt_state: optax.OptState
    update_count: chex.Array  # int32 scalar: updates applied so far
    extra: dict = {}  # per-algorithm state: {} for a2c; target network and epsilons for Q
    norm: dict = {}  # normalisation statistics (paac.algorithms.normalize); {} without


class Batch(NamedTuple):
    """One rollout of ``T = t_max`` steps of ``N = n_envs`` environments, time-major.

    Step ``t`` took ``action[t]`` in ``obs[t]`` and received ``reward[t]``,
    ``terminated[t]``, ``truncated[t]``. ``mask[t]`` is 0 on EnvPool's reset steps
    (the step after a done step), 1 on real experience. ``bootstrap_obs`` is the
    observation after the last step. A recurrent algorithm's rollout also keeps the
    recurrent ``memory`` its environments started it with (before any reset) and ``start``:
    ``start[t]`` zeroes the memory before ``obs[t]`` (its first observation of an episode),
    ``start[T]`` before ``bootstrap_obs``.
    """

    obs: chex.Array  # [T, N, *obs_shape]
    action: chex.Array  # [T, N] int32, or [T, N, D] float32 for continuous actions
    reward: chex.Array  # [T, N] float32
    terminated: chex.Array  # [T, N] bool
    truncated: chex.Array  # [T, N] bool
    mask: chex.Array  # [T, N] float32
    bootstrap_obs: chex.Array  # [N, *obs_shape]
    next_action: chex.Array | None = None  # [N]: action taken at bootstrap_obs (lookahead)
    memory: Any = None  # recurrent: the memory pytree ([N, ...] leaves) at the rollout's start
    start: chex.Array | None = None  # recurrent: [T + 1, N] bool, episode starts


class Algorithm(NamedTuple):
    """How an algorithm plugs into the one training loop; every function is pure and jittable.

    ``init(key) -> LearnerState``; ``act(state, obs, key) -> (actions, key)`` for the
    ``n_envs`` environments; ``update(state, batch) -> (state, metrics)``;
    ``policy(greedy)`` returns ``(params, obs, key) -> (actions, key)`` for evaluation from
    parameters alone. With ``lookahead`` the loop also acts on each rollout's bootstrap
    observation (``Batch.next_action``) and takes that action first in the next rollout:
    Sarsa's ``a'`` is the action actually taken.

    A recurrent algorithm has ``memory(n)``, the memory pytree of ``n`` environments at an
    episode's start; its ``act`` is ``act(state, obs, key, memory, start) -> (actions, key,
    memory)``, zeroing the memory of the environments whose ``start`` is set before acting,
    and its ``policy(greedy)`` the same from parameters alone.
    """

    init: Callable
    act: Callable
    update: Callable
    policy: Callable
    lookahead: bool = False
    memory: Callable | None = None
