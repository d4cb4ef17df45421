"""The rollout: ``t_max`` lock-step steps of every environment, and their episode outcomes.

The rollout is a Python loop that calls the jitted ``act`` (one forward pass on the
``n_envs`` observations) and EnvPool's C++ ``step`` once per step; the update is one
jitted call per rollout (docs/performance.md says why).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np

from paac.core.types import Batch
from paac.run.distributed import DataParallel
from paac.run.envs import EpisodeStats


class RolloutCarry(NamedTuple):
    """What one rollout hands to the next."""

    key: jax.Array  # action-sampling RNG key
    obs: np.ndarray  # [N, *obs_shape]: the observations to act on next
    done_before: np.ndarray  # [N] bool: the last step was done (the next one is a reset step)
    pending_action: np.ndarray | None = None  # [N]: chosen ahead (Algorithm.lookahead)
    memory: Any = None  # recurrent algorithms: the memory pytree, [N, ...] leaves
    start: np.ndarray | None = None  # recurrent: [N] bool, obs is an episode's first


def initial_carry(key, obs: np.ndarray, memory: Callable | None = None) -> RolloutCarry:
    """The carry of environments that start fresh episodes on ``obs``.

    ``memory``: a recurrent algorithm's ``Algorithm.memory``, whose memory of ``n``
    environments at an episode's start the carry then holds; None for a feed-forward one.
    """
    n = obs.shape[0]
    if memory is None:
        return RolloutCarry(key, obs, np.zeros(n, bool))
    fresh = jax.tree.map(np.asarray, memory(n))
    return RolloutCarry(key, obs, np.zeros(n, bool), None, fresh, np.ones(n, bool))


def collect_rollout(
    env, act, state, carry: RolloutCarry, stats: EpisodeStats, t_max: int, lookahead: bool = False
) -> tuple[Batch, RolloutCarry]:
    """Steps every environment ``t_max`` times with ``act(state, obs, key)``.

    With ``lookahead`` it also acts on the observation after the last step; that action
    is ``Batch.next_action`` and is taken first in the next rollout. With a memory in the
    carry (a recurrent algorithm) ``act`` is ``act(state, obs, key, memory, start) ->
    (actions, key, memory)``; an observation starts an episode when the step before it was
    a reset step, whose observation (the final one, returned with done) still belongs to the
    old episode.

    Args:
      env: the EnvPool environments, ``N`` of them (``env.step(actions)``).
      act: ``act(state, obs, key) -> (actions [N], key)``, e.g. a jitted
        ``Algorithm.act``.
      state: the learner state ``act`` is given.
      carry: what the previous rollout handed on (:class:`RolloutCarry`): the key, the
        observations ``[N, *obs_shape]`` to act on, the done flags of the last step, and
        an action chosen ahead.
      stats: told every step's outcome (:meth:`EpisodeStats.step`, or
        :class:`LocalSteps`).
      t_max: steps per environment.
      lookahead: act once more on the last observation (``Algorithm.lookahead``).

    Returns:
      ``(batch, carry)``: the time-major :class:`paac.core.types.Batch` (``obs``
      ``[T, N, *obs_shape]``; ``action`` ``[T, N]`` or, continuous, ``[T, N, D]``, the
      policy's own actions; ``reward``, ``terminated``, ``truncated`` and ``mask``
      ``[T, N]``, the mask 0 on EnvPool's reset steps; ``bootstrap_obs``
      ``[N, *obs_shape]``; ``next_action`` ``[N]`` or None), and the next rollout's carry.
    """
    key, obs, done_before, pending, memory, start = carry
    n = obs.shape[0]
    recurrent = memory is not None
    first_memory = memory
    start_buf = np.empty((t_max + 1, n), bool) if recurrent else None
    obs_buf = np.empty((t_max,) + obs.shape, obs.dtype)
    action_buf = None  # [t_max, N] int32, or [t_max, N, D] float32: as act gives them
    reward_buf = np.empty((t_max, n), np.float32)
    term_buf = np.empty((t_max, n), bool)
    trunc_buf = np.empty((t_max, n), bool)
    mask_buf = np.empty((t_max, n), np.float32)
    for t in range(t_max):
        obs_buf[t] = obs
        if recurrent:
            start_buf[t] = start
            action, key, memory = act(state, obs, key, memory, start)
            action = np.asarray(action)
        elif pending is None:
            action, key = act(state, obs, key)
            action = np.asarray(action)
        else:
            action, pending = pending, None
        obs, reward, terminated, truncated, info = env.step(action)
        if action_buf is None:
            action_buf = np.empty((t_max,) + action.shape, action.dtype)
        action_buf[t] = action
        reward_buf[t] = reward
        term_buf[t] = terminated
        trunc_buf[t] = truncated
        mask_buf[t] = ~done_before
        stats.step(reward, terminated, truncated, info, ~done_before)
        start = done_before  # after a reset step: a new episode's first observation
        done_before = terminated | truncated
    if recurrent:
        start_buf[t_max] = start
    if lookahead:
        pending, key = act(state, obs, key)
        pending = np.asarray(pending)
    batch = Batch(
        obs_buf, action_buf, reward_buf, term_buf, trunc_buf, mask_buf, obs, pending,
        first_memory, start_buf,
    )  # fmt: skip
    return batch, RolloutCarry(key, obs, done_before, pending, memory, start)


class LocalSteps:
    """Stands in for :class:`EpisodeStats` in :func:`collect_rollout` on one of several processes.

    Keeps this process's per-step outcomes, ``[t_max, n_local]`` each, for
    :func:`share_steps` to gather into the run's statistics.
    """

    def __init__(self, t_max: int, n_local: int):
        self.raw = np.zeros((t_max, n_local), np.float32)  # EnvPool's float32 rewards
        self.game_over = np.zeros((t_max, n_local), np.float32)
        self.valid = np.zeros((t_max, n_local), np.float32)
        self.t = 0

    def step(self, reward, terminated, truncated, info, valid) -> None:
        """Keeps one step's :meth:`EpisodeStats.outcome` and mask as row ``t``."""
        raw, game_over = EpisodeStats.outcome(reward, terminated, truncated, info)
        self.raw[self.t], self.game_over[self.t], self.valid[self.t] = raw, game_over, valid
        self.t += 1


def share_steps(dp: DataParallel, local: LocalSteps, stats: EpisodeStats, signum) -> int | None:
    """Every process's rollout outcomes into ``stats``; returns the stop signal of any process.

    ``stats`` becomes the same on all processes, as one process stepping all ``n_e``
    environments would have it. The signal returned is the largest number any process
    received (None when none did), so that all processes stop together. ``local`` then
    starts over for the next rollout.
    """
    t_max, n_local = local.raw.shape
    mine = np.concatenate(
        [local.raw.ravel(), local.game_over.ravel(), local.valid.ravel(), [signum or 0]]
    ).astype(np.float32)
    every = dp.allgather(mine)  # [P, 3 * t_max * n_local + 1]
    parts = every[:, :-1].reshape(dp.process_count, 3, t_max, n_local)
    raw, game_over, valid = np.concatenate(list(parts), axis=-1)  # each [t_max, n_e]
    for t in range(t_max):
        stats.record(raw[t], game_over[t] > 0, valid[t] > 0)
    local.t = 0
    agreed = int(every[:, -1].max())
    return agreed or None
