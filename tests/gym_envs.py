"""Small Gymnasium environments for the tests, registered when this module is imported.

``gymnasium:tests.gym_envs:Corridor-v0`` names them the way a user names their own: Gymnasium
imports the module first. ``Corridor-v0`` is a walk to the end of a corridor; its variants
change one space (or the autoreset mode), to be refused, or fail as they are made.
"""

from __future__ import annotations

import gymnasium
import numpy as np
from gymnasium import spaces

LENGTH = 8
"""Cells of the corridor; the goal is the last."""
STEP_REWARD = -0.05
GOAL_REWARD = 1.0
TIME_LIMIT = 30


class Corridor(gymnasium.Env):
    """Walk right to the goal at the corridor's end; each step costs 0.05, the goal pays 1.

    The walker starts in one of the first half's cells (drawn from the seed of ``reset``).
    Observations are the walker's cell one-hot, in float64 (paac casts them to float32).
    Actions are ``Discrete(3, start=-1)``: -1 steps left (the left wall stops it), 0 stays,
    +1 steps right, so paac's actions 0, 1 and 2 must be shifted by the space's start.
    Walking straight to the goal from cell ``c`` scores ``1 - 0.05 * (6 - c)``, 0.70 to 0.85
    (0.775 on average); a uniformly random walk scores about -1.1 within the 30-step limit.

    ``variant`` swaps one space for one paac refuses (``dict_obs``, ``tuple_obs``,
    ``multi_discrete``, ``multi_binary``, ``box_matrix_action``) or makes the constructor
    fail (``broken``). ``box_action`` makes the actions continuous, ``Box(-2, 2, (1,))``:
    an action below -2/3 steps left, above +2/3 right, and any other stays; an action
    outside the bounds fails the step (paac must clip it).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, render_mode: str | None = None, variant: str = "plain"):
        if variant == "broken":
            raise RuntimeError("the corridor's walls are missing")
        self.render_mode = render_mode
        self.variant = variant
        one_hot = spaces.Box(0.0, 1.0, (LENGTH,), np.float64)
        self.observation_space = {
            "dict_obs": spaces.Dict({"cell": one_hot}),
            "tuple_obs": spaces.Tuple((one_hot, spaces.Discrete(2))),
        }.get(variant, one_hot)
        self.action_space = {
            "multi_discrete": spaces.MultiDiscrete([2, 2]),
            "multi_binary": spaces.MultiBinary(2),
            "box_action": spaces.Box(-2.0, 2.0, (1,), np.float32),
            "box_matrix_action": spaces.Box(-1.0, 1.0, (2, 2), np.float32),
        }.get(variant, spaces.Discrete(3, start=-1))
        self.cell = 0

    def _obs(self):
        one_hot = np.zeros(LENGTH, np.float64)
        one_hot[self.cell] = 1.0
        if self.variant == "dict_obs":
            return {"cell": one_hot}
        if self.variant == "tuple_obs":
            return one_hot, 0
        return one_hot

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cell = int(self.np_random.integers(0, LENGTH // 2))
        return self._obs(), {"start": self.cell}

    def step(self, action):
        if self.variant == "box_action":
            assert action.dtype == np.float32 and action.shape == (1,), action
            assert -2.0 <= action[0] <= 2.0, f"action {action!r} is outside Box(-2, 2)"
            action = -1 if action[0] < -2 / 3 else (1 if action[0] > 2 / 3 else 0)
        assert int(action) in (-1, 0, 1), f"action {action!r} is outside Discrete(3, start=-1)"
        self.cell = min(max(self.cell + int(action), 0), LENGTH - 1)
        terminated = self.cell == LENGTH - 1
        reward = GOAL_REWARD if terminated else STEP_REWARD
        # Keys that must not be read as EnvPool's raw score and game end.
        info = {"reward": 1000.0, "terminated": False}
        return self._obs(), reward, terminated, False, info

    def render(self):
        """The corridor as an RGB image, 16 pixels a cell: the walker white, the goal green
        (in render_mode ``rgb_array``; None in any other, as Gymnasium's environments do)."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.full((16, 16 * LENGTH, 3), 40, np.uint8)
        frame[:, 16 * (LENGTH - 1) :] = (0, 160, 0)
        frame[2:14, 16 * self.cell + 2 : 16 * self.cell + 14] = 255
        return frame


ENTRY = f"{__name__}:Corridor"
gymnasium.register("Corridor-v0", entry_point=ENTRY, max_episode_steps=TIME_LIMIT)
for _variant in ("dict_obs", "tuple_obs", "multi_discrete", "multi_binary", "box_matrix_action"):
    gymnasium.register(f"Corridor-{_variant}-v0", entry_point=ENTRY, kwargs={"variant": _variant})
gymnasium.register(
    "Corridor-box_action-v0",
    entry_point=ENTRY,
    max_episode_steps=TIME_LIMIT,
    kwargs={"variant": "box_action"},
)
gymnasium.register("Corridor-broken-v0", entry_point=ENTRY, kwargs={"variant": "broken"})
# Gymnasium's other autoreset mode: the done step returns the next episode's first observation.
gymnasium.register(
    "Corridor-same-step-v0",
    entry_point=ENTRY,
    max_episode_steps=TIME_LIMIT,
    kwargs={"vector_kwargs": {"autoreset_mode": gymnasium.vector.AutoresetMode.SAME_STEP}},
)
