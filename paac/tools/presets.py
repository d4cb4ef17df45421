"""Default configurations of the experiment scripts, importable by research code."""

from __future__ import annotations

import dataclasses

from paac.core.config import Config
from paac.core.tasks import is_atari, known_env_ids

ATARI = Config()
"""PAAC's published Atari settings (``experiments/atari.py``)."""

CONTROL = Config(
    env="CartPole-v1",
    arch="mlp",
    n_envs=16,
    t_max=5,
    total_steps=500_000,
    lr=0.01,
    entropy_coef=0.01,
    clip_norm=3.0,
    log_interval=5_000,
    checkpoint_interval=100_000,
    target_interval=2_000,  # value-based algos only
    epsilon_anneal_steps=40_000,  # value-based algos only
)
"""Classic control with an MLP torso (``experiments/control.py``); solves CartPole-v1."""


def defaults_for(env_id: str) -> Config:
    """:data:`ATARI` with ``env_id`` for an Atari game, else :data:`CONTROL` with it."""
    if env_id not in known_env_ids():
        return CONTROL  # parsing the command line then names the bad --env
    return dataclasses.replace(ATARI if is_atari(env_id) else CONTROL, env=env_id)
