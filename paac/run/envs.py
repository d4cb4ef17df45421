"""EnvPool environments for training and evaluation, and whole-game episode statistics.

Training Atari uses PAAC's preprocessing: frame skip 4 (max over the last two
frames), 84x84 grey, a stack of 4, up to 30 no-op starts, and (by default)
episodic life and reward clipping. Scores are always the raw score of whole
games: EnvPool's ``info["reward"]`` summed until the real game end
(``info["terminated"]``: all lives lost) or a time-limit truncation.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from paac.core.config import IMAGE_ARCHS, Config, ConfigError, first_line
from paac.core.tasks import is_atari
from paac.core.types import EnvSpec
from paac.nets.networks import conv_output_size, min_frame_size

# gymnasium's note on the float64 bounds of EnvPool's classic-control spaces: noise.
warnings.filterwarnings("ignore", message=".*precision lowered by casting", category=UserWarning)


def make_env(
    env_id: str,
    num_envs: int,
    seed: int,
    *,
    training: bool = True,
    episodic_life: bool = True,
    reward_clip: bool = True,
    num_threads: int = 0,
    **kwargs: Any,
):
    """A gymnasium-style EnvPool vector environment.

    With ``training=False`` Atari games are played whole with raw rewards (no
    episodic life, no clipping), as scores are reported. Extra ``kwargs`` go to
    ``envpool.make`` unchanged.

    Args:
      env_id: the EnvPool task id, e.g. ``Pong-v5``, ``CartPole-v1``.
      num_envs: how many environments the pool steps.
      seed: the seed; EnvPool seeds environment ``i`` with ``seed + i``.
      training: Atari only: with ``training=False`` episodic life and reward clipping
        are off whatever the next two say.
      episodic_life: Atari training only: a lost life ends the training episode.
      reward_clip: Atari training only: rewards clipped to ``[-1, 1]``.
      num_threads: EnvPool worker threads (0: EnvPool chooses), at most ``num_envs``.
      **kwargs: more options for ``envpool.make``, passed unchanged; they win over the
        options set here (for Atari: frame skip 4, 84x84 frames, a stack of 4, up to 30
        no-op starts).

    Returns:
      The EnvPool environment (``env_type="gymnasium"``). A task EnvPool cannot create
      is a ConfigError naming ``--env``.
    """
    # Deferred on purpose, as in paac.core.tasks: EnvPool takes about 2 s to import.
    import envpool

    # More threads than environments would only idle; EnvPool aborts the process when it
    # cannot start them all (--num-threads 100000).
    options: dict[str, Any] = dict(num_threads=min(num_threads, num_envs))
    if is_atari(env_id):
        options.update(
            episodic_life=episodic_life and training,
            reward_clip=reward_clip and training,
            noop_max=30,
            frame_skip=4,
            stack_num=4,
            img_height=84,
            img_width=84,
            repeat_action_probability=0.0,
        )
    options.update(kwargs)
    try:
        return envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, **options)
    except Exception as e:  # e.g. a task whose optional dependencies are missing
        raise ConfigError(
            f"--env={env_id!r} is invalid: EnvPool could not create it "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None


def make_training_env(
    config: Config, seed: int | None = None, num_envs: int | None = None, **kwargs: Any
):
    """The training environments of ``config``, made by :func:`make_env`.

    Seeded with ``seed`` (default config.seed); ``num_envs`` of them (default
    config.n_envs). EnvPool seeds environment ``i`` of the pool with ``seed + i``
    (wrapping in int32).
    """
    return make_env(
        config.env,
        config.n_envs if num_envs is None else num_envs,
        config.seed if seed is None else seed,
        training=True,
        episodic_life=config.episodic_life,
        reward_clip=config.reward_clip,
        num_threads=config.num_threads,
        **kwargs,
    )


def env_spec(env, env_id: str = "") -> EnvSpec:
    """Observation shape/dtype and the number of actions of an EnvPool environment.

    Args:
      env: an EnvPool environment (:func:`make_env`).
      env_id: its task id, for error messages (default: the name of ``env.spec``'s type).

    Returns:
      :class:`paac.core.types.EnvSpec`: ``obs_shape``, ``obs_dtype``, ``num_actions`` and
      ``is_image`` (observations of rank 3, stacked frames). A continuous action space,
      or observations that are neither a vector nor stacked frames, is a ConfigError.
    """
    space = env.action_space
    name = env_id or type(env.spec).__name__.removesuffix("EnvSpec")
    if not hasattr(space, "n"):
        raise ConfigError(
            f"--env={name!r} is invalid: its action space {space} is continuous; "
            "paac's actor-critic supports discrete action spaces only"
        )
    obs_space = env.observation_space
    shape = tuple(int(d) for d in (getattr(obs_space, "shape", None) or ()))
    if len(shape) not in (1, 3):
        raise ConfigError(
            f"--env={name!r} is invalid: its observations ({type(obs_space).__name__} of shape "
            f"{shape}) are neither stacked frames nor a vector; paac supports those two"
        )
    return EnvSpec(
        obs_shape=shape,
        obs_dtype=np.dtype(obs_space.dtype),
        num_actions=int(space.n),
        is_image=len(shape) == 3,
    )


def check_arch(config: Config, spec: EnvSpec) -> None:
    """The torso must match the observations: images for nips/nature, vectors for mlp."""
    if config.arch in IMAGE_ARCHS and not spec.is_image:
        raise ConfigError(
            f"--arch={config.arch!r} is invalid for --env={config.env!r}: its observations "
            f"have shape {spec.obs_shape}, not frames; use --arch mlp"
        )
    if config.arch in IMAGE_ARCHS:
        channels, height, width = spec.obs_shape
        if min(conv_output_size(config.arch, height), conv_output_size(config.arch, width)) < 1:
            raise ConfigError(
                f"--arch={config.arch!r} is invalid for --env={config.env!r}: its "
                f"observations of shape {spec.obs_shape} are read as {channels} frames of "
                f"{height} x {width}, and the {config.arch} torso needs frames of at least "
                f"{min_frame_size(config.arch)} x {min_frame_size(config.arch)} (stacked "
                "first: [frames, height, width], as EnvPool's Atari tasks give them)"
            )
    if config.arch == "mlp" and len(spec.obs_shape) != 1:
        if min(conv_output_size("nips", d) for d in spec.obs_shape[-2:]) >= 1:
            how = "use --arch nips or --arch nature"
        else:
            how = "paac's torsos take vectors or frames stacked first, [frames, height, width]"
        raise ConfigError(
            f"--arch='mlp' is invalid for --env={config.env!r}: its observations have shape "
            f"{spec.obs_shape}; {how}"
        )


SCORE_WINDOW = 20  # games in the "last-20" mean score, and in --target-score's decision


class EpisodeStats:
    """Running raw scores of whole games across a vector of environments (host side).

    Call :meth:`step` after every ``env.step`` with the reward, flags and info it
    returned and the mask of the step (0 for EnvPool's reset steps, which are not
    counted in episode lengths).
    """

    def __init__(self, num_envs: int, window: int = SCORE_WINDOW):
        self.window = window
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)
        self.finished_scores: list[float] = []
        self.finished_lengths: list[int] = []
        self.episodes = 0
        self._recent: list[float] = []

    @staticmethod
    def outcome(reward, terminated, truncated, info) -> tuple[np.ndarray, np.ndarray]:
        """``(raw_reward, game_over)`` ``[N]`` of one step.

        The raw score (EnvPool's ``info["reward"]``) and the real end of the game, or a
        time-limit truncation.
        """
        raw = np.asarray(info["reward"] if "reward" in info else reward, np.float64)
        game_over = np.asarray(info["terminated"] if "terminated" in info else terminated, bool)
        return raw, game_over | np.asarray(truncated, bool)

    def step(self, reward, terminated, truncated, info, valid) -> None:
        """One ``env.step``'s results and mask: :meth:`record` of its :meth:`outcome`."""
        self.record(*self.outcome(reward, terminated, truncated, info), valid)

    def record(self, raw, game_over, valid) -> None:
        """One step of every environment: raw rewards, game ends and masks, each ``[N]``."""
        game_over = np.asarray(game_over, bool)
        self.returns += np.asarray(raw, np.float64)
        self.lengths += np.asarray(valid, np.int64)
        for i in np.flatnonzero(game_over):
            score = float(self.returns[i])
            self.finished_scores.append(score)
            self.finished_lengths.append(int(self.lengths[i]))
            self._recent.append(score)
            self.episodes += 1
        if len(self._recent) > self.window:
            del self._recent[: len(self._recent) - self.window]
        self.returns[game_over] = 0.0
        self.lengths[game_over] = 0

    def drain(self) -> tuple[list[float], list[int]]:
        """Scores and lengths of the games finished since the last call."""
        scores, lengths = self.finished_scores, self.finished_lengths
        self.finished_scores, self.finished_lengths = [], []
        return scores, lengths

    def abandon_running(self) -> None:
        """Forget the games in progress (their environments are being replaced)."""
        self.returns[:] = 0.0
        self.lengths[:] = 0

    def summary(self) -> dict:
        """What a checkpoint keeps: the count of finished games and the recent window."""
        return {"episodes": self.episodes, "recent": list(self._recent)}

    def load(self, summary: dict) -> None:
        """Takes back what :meth:`summary` kept (a resumed run's statistics)."""
        self.episodes = int(summary.get("episodes", 0))
        self._recent = [float(x) for x in summary.get("recent", [])][-self.window :]

    @property
    def recent_mean(self) -> float | None:
        """Mean raw score of the last ``window`` finished games (None before the first)."""
        return float(np.mean(self._recent)) if self._recent else None

    @property
    def recent_full(self) -> bool:
        """Whether a whole ``window`` of games is in :attr:`recent_mean`."""
        return len(self._recent) >= self.window
