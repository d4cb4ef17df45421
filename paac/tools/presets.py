"""Default configurations of the experiment scripts and each task's preset, importable.

A preset is a named :class:`~paac.core.config.Config` the command line parses over (flags
override it), kept per task as rl-zoo keeps its hyperparameter files. ``atari`` is PAAC's
published Atari settings, ``control`` the classic-control defaults, ``continuous`` the
defaults of continuous actions (MuJoCo, Box2D, classic control); a task preset is named
after its task and gives only what differs from ``control`` (or, for a task with continuous
actions, from ``continuous``). The measurements behind the tables are in docs/presets.md
and docs/continuous.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from paac.core.config import IMAGE_ARCHS, Config, ConfigError, flag
from paac.core.tasks import gymnasium_id, is_atari, is_continuous, is_gymnasium

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

TASK_PRESETS: dict[str, dict[str, Any]] = {
    # The control defaults were tuned on it.
    "CartPole-v1": {},
    # rl-zoo's A2C: the returns' scale (-100 at gamma 0.99) normalised away, no entropy bonus.
    "Acrobot-v1": {"normalize_obs": True, "normalize_reward": True, "entropy_coef": 0.0},
    # The velocity (|v| < 0.07) needs normalising to be seen; gamma 0.95 shrinks the returns.
    "MountainCar-v0": {
        "normalize_obs": True,
        "gamma": 0.95,
        "entropy_coef": 0.0,
        "total_steps": 1_000_000,
        "log_interval": 10_000,
    },
    # Normalised rewards give small gradients: a larger lr than PAAC's 0.0007 x n_e.
    "LunarLander-v3": {
        "normalize_obs": True,
        "normalize_reward": True,
        "lr": 0.03,
        "entropy_coef": 0.001,
        "total_steps": 1_000_000,
        "log_interval": 10_000,
    },
    # A memory task (docs/lstm.md), an LSTM of 64 cells: 400 within 210k steps on seeds 0-2
    # (--lstm-cells 0 stays under 70). Seed 0 at t_max 5: 162 after 1M without normalisation;
    # 485 at 380k with both, then unsteady (285-430); t_max 16, a longer BPTT, stays 440-480.
    "CartPoleNoVel-v1": {
        "lstm_cells": 64,
        "t_max": 16,
        "normalize_obs": True,
        "normalize_reward": True,
        "total_steps": 1_000_000,
        "log_interval": 10_000,
    },
}
"""Each task's settings over :data:`CONTROL`, the preset named after its task
(docs/presets.md has what was measured)."""

CONTINUOUS = dataclasses.replace(
    CONTROL,
    env="HalfCheetah-v4",
    # Longer rollouts with GAE: HalfCheetah-v4's mean over seeds 0-5 was 670 at t_max 5
    # with n-step returns; a larger lr then lifts it from 1,667 to 2,273 (docs/continuous.md).
    t_max=32,
    gae_lambda=0.95,
    lr=0.02,
    normalize_obs=True,
    normalize_reward=True,
    entropy_coef=0.0,
    total_steps=1_000_000,
    log_interval=10_000,
)
"""Continuous actions with an MLP torso and a Gaussian policy (``experiments/mujoco.py``)."""

CONTINUOUS_PRESETS: dict[str, dict[str, Any]] = {
    "HalfCheetah-v4": {},
    "InvertedPendulum-v4": {"total_steps": 500_000},
    # lr 0.02 ended its seeds 0-2 at 833-1,098; lr 0.01 at 928-1,457.
    "Hopper-v4": {"lr": 0.01},
}
"""Each continuous task's settings over :data:`CONTINUOUS` (docs/continuous.md)."""

CONTINUOUS_FAMILY = frozenset({"continuous", *CONTINUOUS_PRESETS})
"""The presets for continuous actions; every other one is for discrete actions."""

SHARED_PRESETS: dict[str, str] = {
    "CartPole-v0": "CartPole-v1",
    "phys2d/CartPole-v0": "CartPole-v1",
    "phys2d/CartPole-v1": "CartPole-v1",
    "LunarLander-v2": "LunarLander-v3",
}
"""Tasks that take another version's preset: task -> preset name."""


def _presets() -> dict[str, Config]:
    table = {"atari": ATARI, "control": CONTROL, "continuous": CONTINUOUS}
    for task, values in TASK_PRESETS.items():
        table[task] = dataclasses.replace(CONTROL, env=task, **values)
    for task, values in CONTINUOUS_PRESETS.items():
        table[task] = dataclasses.replace(CONTINUOUS, env=task, **values)
    return {name: dataclasses.replace(c, preset=name) for name, c in table.items()}


PRESETS: dict[str, Config] = _presets()
"""Every preset by name, its ``preset`` field set to that name; flags override them."""


def preset_of(env_id: str) -> str:
    """The name of ``env_id``'s preset: its task's, else ``atari``, ``continuous`` (an
    EnvPool task with continuous actions) or ``control``.

    A ``gymnasium:ID`` task takes the preset of the EnvPool task of the same id.
    """
    task = gymnasium_id(env_id)
    task = SHARED_PRESETS.get(task, task)
    if task in TASK_PRESETS or task in CONTINUOUS_PRESETS:
        return task
    if is_atari(env_id):
        return "atari"
    return "continuous" if is_continuous(task) else "control"


def preset_config(name: str, env_id: str | None = None) -> Config:
    """Preset ``name`` for ``env_id`` (by default the preset's own task).

    Raises:
      ConfigError: (one line) ``name`` is no preset, or the preset does not fit the
        task's spaces: its torso (an MLP preset on an Atari game, a CNN preset on vector
        observations) or its actions (a preset for continuous actions on a task with
        discrete ones, or the reverse). A Gymnasium task's spaces are known once it is
        made, and are not checked here.
    """
    if name not in PRESETS:
        raise ConfigError(
            f"{flag('preset')}={name!r} is invalid: must be one of {', '.join(PRESETS)}"
        )
    config = PRESETS[name]
    if env_id is None or env_id == config.env:
        return config
    config = dataclasses.replace(config, env=env_id)  # an impossible --env is named here
    if not is_gymnasium(env_id):  # a Gymnasium task's observations are known once it is made
        image = config.arch in IMAGE_ARCHS
        if image != is_atari(env_id):
            what = "Atari frames" if image else "vector observations"
            fits = preset_of(env_id)
            raise ConfigError(
                f"{flag('preset')}={name!r} is invalid for {flag('env')}={env_id}: it is for "
                f"{what} (--arch {config.arch}); {env_id}'s preset is {fits!r}"
            )
        continuous = name in CONTINUOUS_FAMILY
        if continuous != is_continuous(env_id):
            kinds = {True: "continuous", False: "discrete"}
            raise ConfigError(
                f"{flag('preset')}={name!r} is invalid for {flag('env')}={env_id}: it is for "
                f"{kinds[continuous]} actions, and {env_id}'s are {kinds[not continuous]}; "
                f"{env_id}'s preset is {preset_of(env_id)!r}"
            )
    return config


def defaults_for(env_id: str) -> Config:
    """The preset of ``env_id`` (:func:`preset_of`) with ``env_id`` as its task."""
    try:
        return preset_config(preset_of(env_id), env_id)
    except ConfigError:  # an impossible env_id: parsing the command line then names it
        return PRESETS["control"]
