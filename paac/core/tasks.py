"""EnvPool's task registry: which task ids exist, and which are Atari games."""

from __future__ import annotations

import functools

ATARI_OPTIONS = (
    "episodic_life",
    "reward_clip",
    "noop_max",
    "frame_skip",
    "stack_num",
    "img_height",
    "img_width",
    "repeat_action_probability",
)
"""The preprocessing options every EnvPool Atari task has (VizDoom's have some of them)."""


def _envpool():
    # Deferred on purpose: EnvPool takes about 2 s to import, and `import paac` for the
    # numerics alone should not pay it.
    import envpool

    return envpool


@functools.cache
def known_env_ids() -> frozenset[str]:
    """Every task id EnvPool registers (``envpool.list_all_envs()``)."""
    return frozenset(_envpool().list_all_envs())


@functools.cache
def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an EnvPool Atari task: one with all of :data:`ATARI_OPTIONS`.

    False for a task whose spec cannot be built here (its creation then fails with the
    reason).
    """
    try:
        fields = _envpool().make_spec(env_id).config._fields
    except Exception:  # e.g. Procgen without its Qt runtime
        return False
    return all(option in fields for option in ATARI_OPTIONS)
