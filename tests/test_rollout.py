"""collect_rollout against a scripted environment: masks, flags and carries across rollouts."""

import numpy as np

from paac.run.envs import EpisodeStats
from paac.run.rollout import RolloutCarry, collect_rollout


class ScriptedEnv:
    """Two environments with EnvPool's next-step auto-reset. Env 0 terminates on its 2nd
    step, env 1 is truncated on its 3rd; the step after either is a reset step (reward 0,
    action ignored). Observations are the global step counter."""

    def __init__(self):
        self.t = 0
        self.actions = []

    def step(self, action):
        self.actions.append(np.array(action))
        self.t += 1
        n = 2
        obs = np.full((n, 1), float(self.t), np.float32)
        reward = np.ones(n, np.float32)
        term = np.array([self.t == 2, False])
        trunc = np.array([False, self.t == 3])
        reward[0] = 0.0 if self.t == 3 else reward[0]  # env 0 resets on step 3
        reward[1] = 0.0 if self.t == 4 else reward[1]  # env 1 resets on step 4
        return obs, reward, term, trunc, {}


def test_masks_and_flags_across_rollouts():
    env, stats = ScriptedEnv(), EpisodeStats(2)
    calls = []

    def act(state, obs, key):
        calls.append(obs.copy())
        return np.array([key % 2, 1 - key % 2], np.int32), key + 1

    carry = RolloutCarry(0, np.zeros((2, 1), np.float32), np.zeros(2, bool))
    b1, carry = collect_rollout(env, act, None, carry, stats, t_max=2)
    b2, carry = collect_rollout(env, act, None, carry, stats, t_max=2)
    np.testing.assert_array_equal(b1.terminated, [[False, False], [True, False]])
    np.testing.assert_array_equal(b2.truncated, [[False, True], [False, False]])
    # Reset steps: env 0 at global step 3 (b2[0]), env 1 at global step 4 (b2[1]).
    np.testing.assert_array_equal(b1.mask, np.ones((2, 2)))
    np.testing.assert_array_equal(b2.mask, [[0.0, 1.0], [1.0, 0.0]])
    # obs[t] is what action[t] was chosen on; the bootstrap obs follows the last step.
    np.testing.assert_array_equal(b2.obs[:, :, 0], [[2, 2], [3, 3]])
    np.testing.assert_array_equal(b2.bootstrap_obs[:, 0], [4, 4])
    # Rewards as scripted (0 on the reset steps); actions as act chose them, per environment.
    np.testing.assert_array_equal(b1.reward, [[1, 1], [1, 1]])
    np.testing.assert_array_equal(b2.reward, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(b1.action, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(b2.action, [[0, 1], [1, 0]])
    np.testing.assert_array_equal(np.stack(env.actions), [[0, 1], [1, 0], [0, 1], [1, 0]])
    np.testing.assert_array_equal(carry.done_before, [False, False])
    assert b1.next_action is None and carry.key == 4 and len(calls) == 4
    assert stats.episodes == 2 and stats.drain() == ([2.0, 3.0], [2, 3])


def test_lookahead_takes_the_chosen_action_next():
    env, stats = ScriptedEnv(), EpisodeStats(2)
    calls = []

    def act(state, obs, key):
        calls.append(float(obs[0, 0]))
        return np.array([key % 2, 1 - key % 2], np.int32), key + 1

    carry = RolloutCarry(1, np.zeros((2, 1), np.float32), np.zeros(2, bool))
    b1, carry = collect_rollout(env, act, None, carry, stats, 2, lookahead=True)
    # Acted on obs 0, 1 and, ahead, on the bootstrap obs 2.
    assert calls == [0.0, 1.0, 2.0]
    np.testing.assert_array_equal(b1.next_action, carry.pending_action)
    b2, carry = collect_rollout(env, act, None, carry, stats, 2, lookahead=True)
    np.testing.assert_array_equal(b2.action[0], b1.next_action)  # taken, not re-chosen
    np.testing.assert_array_equal(env.actions[2], b1.next_action)
    assert calls == [0.0, 1.0, 2.0, 3.0, 4.0]
