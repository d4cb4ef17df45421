"""The task registries: EnvPool's task ids (and which are Atari games), and Gymnasium's.

A task id is EnvPool's (``CartPole-v1``, ``Pong-v5``) or, prefixed with ``gymnasium:``, one
registered with Gymnasium (``gymnasium:CartPole-v1``, ``gymnasium:my_pkg.envs:Maze-v0``: the
module is imported first, Gymnasium's own convention for user environments).
"""

from __future__ import annotations

import functools
import importlib

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


FILTERED_TASKS: dict[str, tuple[str, tuple[int, ...]]] = {
    # rl-zoo's velocity-free CartPole: cart position and pole angle only. A policy needs a
    # memory (--lstm-cells) to infer the velocities.
    "CartPoleNoVel-v1": ("CartPole-v1", (0, 2)),
}
"""Tasks paac makes from an EnvPool task by keeping some observation entries:
``{id: (EnvPool id, kept indices)}``."""


@functools.cache
def known_env_ids() -> frozenset[str]:
    """Every task id paac makes from EnvPool: ``envpool.list_all_envs()``, and
    :data:`FILTERED_TASKS`."""
    return frozenset(_envpool().list_all_envs()) | frozenset(FILTERED_TASKS)


@functools.cache
def _envpool_spec(env_id: str):
    """EnvPool's spec of ``env_id``; None for a Gymnasium or filtered task, and for a task
    whose spec cannot be built here (its creation then fails with the reason)."""
    if is_gymnasium(env_id) or env_id in FILTERED_TASKS:
        return None
    try:
        return _envpool().make_spec(env_id)
    except Exception:  # e.g. Procgen without its Qt runtime
        return None


@functools.cache
def is_atari(env_id: str) -> bool:
    """Whether ``env_id`` is an EnvPool Atari task: one with all of :data:`ATARI_OPTIONS`.

    False for a task whose spec cannot be built here (its creation then fails with the
    reason).
    """
    spec = _envpool_spec(env_id)
    return spec is not None and all(option in spec.config._fields for option in ATARI_OPTIONS)


@functools.cache
def is_continuous(env_id: str) -> bool:
    """Whether EnvPool's task ``env_id`` has continuous (Box) actions; False for a Gymnasium
    task (its spaces are known once it is made) and for a task whose spec cannot be built."""
    spec = _envpool_spec(env_id)
    return spec is not None and type(spec.action_space).__name__ == "Box"


@functools.cache
def is_mujoco(env_id: str) -> bool:
    """Whether ``env_id`` is one of EnvPool's MuJoCo tasks (gym's or dm_control's), which
    render through MuJoCo's OpenGL renderer."""
    if is_gymnasium(env_id) or env_id in FILTERED_TASKS:
        return False
    entry = _envpool().registration.registry.specs.get(env_id)
    return entry is not None and str(entry[0]).startswith("envpool.mujoco")


GYMNASIUM = "gymnasium:"
"""The prefix of a task id registered with Gymnasium rather than EnvPool."""


def is_gymnasium(env_id: str) -> bool:
    """Whether ``env_id`` names a Gymnasium environment (``gymnasium:ID``)."""
    return env_id.startswith(GYMNASIUM)


def gymnasium_id(env_id: str) -> str:
    """The id Gymnasium is given: ``env_id`` without its ``gymnasium:`` prefix."""
    return env_id.removeprefix(GYMNASIUM)


@functools.cache
def gymnasium_problem(env_id: str) -> str | None:
    """Why ``gymnasium:ID`` cannot be made, in a phrase; None when Gymnasium registers it.

    ``ID`` may be ``module:Env-v0``: the module is imported first (and must import
    cleanly), then ``Env-v0`` must be in Gymnasium's registry.
    """
    # Deferred on purpose: only runs on Gymnasium tasks import Gymnasium's registry.
    import gymnasium

    name = gymnasium_id(env_id)
    if not name:
        return "names no Gymnasium id after 'gymnasium:' (e.g. gymnasium:CartPole-v1)"
    module, _, env_name = name.rpartition(":")
    if module:
        try:
            importlib.import_module(module)
        except Exception as e:  # a missing module, or one that fails as it is imported
            reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
            return (
                f"its module {module!r} cannot be imported ({type(e).__name__}: {reason})"
                if reason
                else f"its module {module!r} cannot be imported ({type(e).__name__})"
            )
    if env_name not in gymnasium.registry:
        close = sorted(k for k in gymnasium.registry if k.lower().startswith(env_name[:4].lower()))
        hint = f" (did you mean {', '.join(close[:5])}?)" if close else ""
        where = f" after importing {module!r}" if module else ""
        return f"{env_name!r} is not a registered Gymnasium id{where}{hint}"
    return None
