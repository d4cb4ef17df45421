"""Environments for training and evaluation (EnvPool's, or Gymnasium's vector environments
behind an adapter), and whole-game episode statistics.

Training Atari uses PAAC's preprocessing: frame skip 4 (max over the last two
frames), 84x84 grey, a stack of 4, up to 30 no-op starts, and (by default)
episodic life and reward clipping. Scores are always the raw score of whole
games: EnvPool's ``info["reward"]`` summed until the real game end
(``info["terminated"]``: all lives lost) or a time-limit truncation. A Gymnasium
task's score is the sum of its own rewards until it is terminated or truncated
(docs/environments.md).
"""

from __future__ import annotations

import functools
import multiprocessing
import subprocess
import sys
import tempfile
import types
import warnings
from typing import Any

import numpy as np

from paac.core.config import IMAGE_ARCHS, VALUE_ALGOS, Config, ConfigError, first_line, flag
from paac.core.tasks import FILTERED_TASKS, gymnasium_id, is_atari, is_gymnasium, is_mujoco
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
    vectorization: str = "sync",
    **kwargs: Any,
):
    """A gymnasium-style EnvPool vector environment, or a :class:`GymnasiumEnv`.

    With ``training=False`` Atari games are played whole with raw rewards (no
    episodic life, no clipping), as scores are reported. Extra ``kwargs`` go to
    ``envpool.make`` unchanged (for ``gymnasium:ID``, to the environment).

    Args:
      env_id: the EnvPool task id, e.g. ``Pong-v5``, ``CartPole-v1``, or ``gymnasium:ID``
        for a Gymnasium environment (:class:`GymnasiumEnv`).
      num_envs: how many environments the pool steps.
      seed: the seed; environment ``i`` is seeded with ``seed + i``.
      training: Atari only: with ``training=False`` episodic life and reward clipping
        are off whatever the next two say.
      episodic_life: Atari training only: a lost life ends the training episode.
      reward_clip: Atari training only: rewards clipped to ``[-1, 1]``.
      num_threads: EnvPool worker threads (0: EnvPool chooses), at most ``num_envs``;
        EnvPool tasks only.
      vectorization: Gymnasium tasks only: ``sync`` (stepped in turn in this process) or
        ``async`` (a subprocess each).
      **kwargs: more options for ``envpool.make``, passed unchanged; they win over the
        options set here (for Atari: frame skip 4, 84x84 frames, a stack of 4, up to 30
        no-op starts). For ``gymnasium:ID``, the environment's own arguments
        (``render_mode="rgb_array"``, ...).

    Returns:
      The EnvPool environment (``env_type="gymnasium"``), or a :class:`GymnasiumEnv`. A
      task that cannot be created is a ConfigError naming ``--env``.
    """
    if is_gymnasium(env_id):
        if num_threads:
            raise ConfigError(
                f"--num-threads={num_threads!r} is invalid for --env={env_id!r}: it sets "
                "EnvPool's threads; a Gymnasium task is stepped as --vectorization says"
            )
        return bounded(GymnasiumEnv(env_id, num_envs, seed, vectorization, **kwargs))
    if vectorization != "sync":
        raise ConfigError(
            f"--vectorization={vectorization!r} is invalid for --env={env_id!r}: it is for "
            "Gymnasium tasks (gymnasium:ID); EnvPool steps its own in its threads "
            "(--num-threads)"
        )
    if env_id in FILTERED_TASKS:
        base, keep = FILTERED_TASKS[env_id]
        env = make_env(
            base,
            num_envs,
            seed,
            training=training,
            episodic_life=episodic_life,
            reward_clip=reward_clip,
            num_threads=num_threads,
            **kwargs,
        )
        return ObservationFilter(env, keep, env_id)
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
        env = envpool.make(env_id, env_type="gymnasium", num_envs=num_envs, seed=seed, **options)
    except Exception as e:  # e.g. a task whose optional dependencies are missing
        raise ConfigError(
            f"--env={env_id!r} is invalid: EnvPool could not create it "
            f"({type(e).__name__}: {first_line(e)})"
        ) from None
    if np.dtype(env.observation_space.dtype) == np.float64:  # EnvPool's MuJoCo tasks
        env = Float32Observations(env)
    return bounded(env)


def bounded(env):
    """``env`` behind :class:`ActionBounds` when its actions are a Box; else ``env`` itself."""
    # Deferred on purpose: Gymnasium's spaces are imported once an environment exists.
    from gymnasium import spaces

    return ActionBounds(env) if isinstance(env.action_space, spaces.Box) else env


class EnvWrapper:
    """Another environment with one part changed; everything else is the wrapped one's."""

    def __init__(self, env):
        self.env = env

    def __getattr__(self, name: str):
        return getattr(self.env, name)

    def close(self) -> None:
        self.env.close()


class ObservationWrapper(EnvWrapper):
    """An environment whose observations are the wrapped one's through :meth:`observation`
    (``observation_space`` set to match by the subclass)."""

    def observation(self, obs):
        raise NotImplementedError

    def reset(self, *args, **kwargs):
        obs, info = self.env.reset(*args, **kwargs)
        return self.observation(obs), info

    def step(self, actions):
        obs, *rest = self.env.step(actions)
        return (self.observation(obs), *rest)


class Float32Observations(ObservationWrapper):
    """An environment whose float64 observations (EnvPool's MuJoCo tasks) are given as
    float32, the precision paac's networks compute in; ``observation_space`` says so."""

    def __init__(self, env):
        # Deferred on purpose: Gymnasium's spaces are imported once an environment exists.
        from gymnasium import spaces

        super().__init__(env)
        space = env.observation_space
        self.observation_space = spaces.Box(space.low, space.high, dtype=np.float32)

    def observation(self, obs):
        return _float32(obs)


class ActionBounds(EnvWrapper):
    """The environment boundary of continuous actions: the policy's action, made the task's.

    A Gaussian policy acts in ``[-1, 1]`` on every action dimension whose bounds are both
    finite: such an action ``u`` is rescaled to ``low + (u + 1) (high - low) / 2``, then
    clipped to ``[low, high]`` (a sample beyond +-1 plays the bound). A dimension with an
    infinite bound is neither rescaled nor clipped on that side. The action reaches the
    environment in its space's dtype (float64 for EnvPool's MuJoCo tasks); the policy's own
    action, unclipped, stays in the rollout for its log-probability. Everything else is the
    wrapped environment's; ``action_space`` is its own, with the task's bounds.
    """

    def __init__(self, env):
        super().__init__(env)
        space = env.action_space
        low = np.asarray(space.low, np.float64)
        high = np.asarray(space.high, np.float64)
        self.finite = np.isfinite(low) & np.isfinite(high)
        lo, hi = np.where(self.finite, low, -1.0), np.where(self.finite, high, 1.0)
        self.center, self.half = (lo + hi) / 2, (hi - lo) / 2  # 0 and 1 where unbounded
        self.low, self.high, self.dtype = low, high, np.dtype(space.dtype)

    def to_env(self, action) -> np.ndarray:
        """The policy's actions ``[N, D]`` as the environment takes them."""
        action = self.center + self.half * np.asarray(action, np.float64)
        return np.clip(action, self.low, self.high).astype(self.dtype)

    def step(self, action):
        return self.env.step(self.to_env(action))


_RENDER_PROBE = """
import numpy as np, envpool
env = envpool.make({env_id!r}, env_type="gymnasium", num_envs=1, render_mode="rgb_array")
env.reset()
frame = env.render(env_ids=[0])[0]
assert frame.ndim == 3, frame.shape
"""


@functools.cache
def render_problem(env_id: str) -> str | None:
    """Why EnvPool cannot render ``env_id``'s frames on this machine; None when it can.

    Only EnvPool's MuJoCo tasks are probed: their renderer needs an OpenGL context (EGL or
    OSMesa, chosen by ``$MUJOCO_GL``), and without one MuJoCo aborts the whole process. So
    the probe renders one frame in a child process, and its last words are the reason.
    """
    if not is_mujoco(env_id):
        return None
    try:
        with tempfile.TemporaryDirectory(prefix="paac-render-") as where:  # MUJOCO_LOG.TXT
            done = subprocess.run(
                [sys.executable, "-c", _RENDER_PROBE.format(env_id=env_id)],
                capture_output=True,
                text=True,
                timeout=300,
                cwd=where,
            )
    except subprocess.TimeoutExpired:
        return "rendering one frame took over 300 s"
    if done.returncode == 0:
        return None
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error" in ln.lower()]
    reason = (errors or lines or [f"exit status {done.returncode}"])[-1][:200]
    if "opengl" in reason.lower():
        return (
            "EnvPool's MuJoCo renderer needs an OpenGL context (EGL or OSMesa, chosen by "
            f"$MUJOCO_GL), and has none here ({reason})"
        )
    return f"EnvPool's MuJoCo renderer could not render a frame here ({reason})"


class ObservationFilter(ObservationWrapper):
    """An environment that keeps only the observation entries ``keep`` of another
    (:data:`paac.core.tasks.FILTERED_TASKS`); everything else is the wrapped one's."""

    def __init__(self, env, keep: tuple[int, ...], env_id: str):
        # Deferred on purpose: Gymnasium's spaces are imported once an environment exists.
        from gymnasium import spaces

        super().__init__(env)
        self.keep, self.env_id = list(keep), env_id
        space = env.observation_space
        self.observation_space = spaces.Box(
            space.low[self.keep], space.high[self.keep], dtype=space.dtype
        )

    def observation(self, obs):
        return obs[:, self.keep]


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
        vectorization=config.vectorization,
        **kwargs,
    )


def async_context() -> str:
    """The multiprocessing start method of async Gymnasium environments.

    ``forkserver`` where the platform has it, else ``spawn``; never a plain ``fork`` of
    this process, whose JAX threads (and their locks) a forked child would inherit without
    the threads themselves. Each child imports the environment's module itself, and runs
    the main script's imports again, as under ``spawn``: the server first imports the
    ``paac`` modules this process has, so that its children inherit them (16 children
    importing JAX and paac's tools took 12 s on 2 cores, at every restart of the
    environments).
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    ours = sorted(m for m in list(sys.modules) if m == "paac" or m.startswith("paac."))
    multiprocessing.set_forkserver_preload(["__main__", *ours])  # used when the server starts
    return "forkserver"


INFO_KEY = "gymnasium"
"""The key of a Gymnasium environment's own info in the info dict :class:`GymnasiumEnv`
returns: nested, so that its keys are never read as EnvPool's (``reward``,
``terminated``: the raw score and game end of Atari)."""


class GymnasiumEnv:
    """A Gymnasium vector environment that behaves as paac uses EnvPool's.

    Made by ``gymnasium.make_vec(ID, num_envs, vectorization_mode=...)`` for
    ``gymnasium:ID``. Its autoreset mode must be NextStep, EnvPool's: the step after a done
    step resets that environment, ignores its action, and returns reward 0 with both flags
    False (paac masks it by the previous done). Around it:

    * the first :meth:`reset` seeds environment ``i`` with ``seed + i``;
    * ``action_space`` is the single environment's ``Discrete(n)`` from 0: paac's actions
      are shifted by the space's ``start`` on their way to the environment;
    * float64 observations are cast to float32, and ``observation_space`` says so;
    * :meth:`step` returns rewards float32 ``[N]`` and flags bool ``[N]``, and an info
      holding the environment's own under :data:`INFO_KEY` alone (a score is the sum of the
      environment's rewards);
    * ``spec.config.max_episode_steps`` (0 without a time limit), ``config`` and
      :meth:`render` as EnvPool has them.

    Spaces paac cannot take are refused by :func:`env_spec`, naming them.
    """

    def __init__(
        self, env_id: str, num_envs: int, seed: int, vectorization: str = "sync", **kwargs: Any
    ):
        # Deferred on purpose: Gymnasium is imported for its own tasks only.
        import gymnasium
        from gymnasium import spaces

        self.env_id = env_id
        self.num_envs = num_envs
        vector_kwargs = {"context": async_context()} if vectorization == "async" else {}
        try:
            env = gymnasium.make_vec(
                gymnasium_id(env_id),
                num_envs,
                vectorization_mode=vectorization,
                vector_kwargs=vector_kwargs,
                **kwargs,
            )
        except Exception as e:  # the environment's constructor, a missing dependency, ...
            raise ConfigError(
                f"--env={env_id!r} is invalid: Gymnasium could not create it "
                f"({type(e).__name__}: {first_line(e)})"
            ) from None
        self._env = env
        mode = env.metadata.get("autoreset_mode")
        mode = getattr(mode, "value", mode)
        if mode != gymnasium.vector.AutoresetMode.NEXT_STEP.value:
            env.close()
            raise ConfigError(
                f"--env={env_id!r} is invalid: its vector environment resets in autoreset "
                f"mode {mode}; paac needs NextStep, EnvPool's (the step after a done step "
                "resets the environment)"
            )
        # paac.run.resume wraps seeds into int32, as EnvPool takes them; Gymnasium's are >= 0,
        # and seed + offset comes back as it was before the wrap.
        self._seed: int | None = seed % 2**32
        action_space = env.single_action_space
        self._start = 0
        if isinstance(action_space, spaces.Discrete):
            self._start = int(action_space.start)
            action_space = spaces.Discrete(int(action_space.n))
        self.action_space = action_space
        obs_space = env.single_observation_space
        if isinstance(obs_space, spaces.Box) and obs_space.dtype == np.float64:
            obs_space = spaces.Box(obs_space.low, obs_space.high, dtype=np.float32)
        self.observation_space = obs_space
        limit = kwargs.get("max_episode_steps", getattr(env.spec, "max_episode_steps", None))
        limit = int(limit or 0)  # the vector env's spec ignores a max_episode_steps given
        # What paac reads of an EnvPool spec.
        self.spec = types.SimpleNamespace(
            id=env_id, config=types.SimpleNamespace(max_episode_steps=limit)
        )
        self.config = dict(
            num_envs=num_envs, seed=seed, max_episode_steps=limit, vectorization=vectorization
        )

    def reset(self) -> tuple[Any, dict]:
        """``(obs [N, ...], info)``; the first call seeds environment ``i`` with ``seed + i``."""
        seed, self._seed = self._seed, None
        obs, info = self._env.reset(seed=seed)
        return _float32(obs), {INFO_KEY: info}

    def step(self, action) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        """Steps every environment with ``action [N]`` (in ``[0, n)``).

        Returns:
          ``(obs, reward, terminated, truncated, info)``: rewards float32 ``[N]``, flags
          bool ``[N]``, and the environments' own info under :data:`INFO_KEY`.
        """
        action = np.asarray(action)
        if self._start:
            action = action + self._start
        obs, reward, terminated, truncated, info = self._env.step(action)
        return (
            _float32(obs),
            np.asarray(reward, np.float32),
            np.asarray(terminated, bool),
            np.asarray(truncated, bool),
            {INFO_KEY: info},
        )

    def render(self, env_ids=(0,)) -> list[np.ndarray]:
        """RGB frames ``[H, W, 3]`` of environments ``env_ids`` (made with
        ``render_mode="rgb_array"``); a failure is a ConfigError naming ``--video``."""
        envs = getattr(self._env, "envs", None)  # SyncVectorEnv: render only those asked
        try:
            if envs is not None:
                frames = [envs[i].render() for i in env_ids]
            else:
                every = self._env.render()
                frames = [every[i] for i in env_ids]
        except Exception as e:  # e.g. a renderer whose dependency is missing (pygame)
            raise ConfigError(
                f"--video is invalid: {self.env_id!r} cannot render frames "
                f"({type(e).__name__}: {first_line(e)})"
            ) from None
        if any(getattr(f, "ndim", 0) != 3 for f in frames):
            raise ConfigError(
                f"--video is invalid: {self.env_id!r} renders no RGB frames in "
                "render_mode 'rgb_array'"
            )
        return frames

    def close(self) -> None:
        """Closes the environments (and, when async, their subprocesses)."""
        self._env.close()


def _float32(obs):
    """float64 observations as float32 (paac's networks compute in float32)."""
    if getattr(obs, "dtype", None) == np.float64:
        return obs.astype(np.float32)
    return obs


def describe_space(space) -> str:
    """A Gymnasium space in one short line: a Box by its shape and dtype, others as they print.

    Composite spaces (Dict, Tuple) are described by their parts.
    """
    # Deferred on purpose: Gymnasium's spaces are imported once an environment exists.
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        text = f"Box(shape={space.shape}, dtype={space.dtype})"
    elif isinstance(space, spaces.Dict):
        text = "Dict(" + ", ".join(f"{k!r}: {describe_space(v)}" for k, v in space.items()) + ")"
    elif isinstance(space, spaces.Tuple):
        text = "Tuple(" + ", ".join(describe_space(v) for v in space) + ")"
    else:
        text = " ".join(str(space).split())
    return text if len(text) <= 120 else text[:117] + "..."


def env_spec(env, env_id: str = "") -> EnvSpec:
    """Observation shape/dtype and the number of actions of an environment.

    Args:
      env: an EnvPool environment or a :class:`GymnasiumEnv` (:func:`make_env`).
      env_id: its task id, for error messages (default: the adapter's, or the name of
        ``env.spec``'s type).

    Returns:
      :class:`paac.core.types.EnvSpec`: ``obs_shape``, ``obs_dtype``, ``num_actions``,
      ``is_image`` (observations of rank 3, stacked frames) and ``continuous`` (a Box of
      actions, of ``num_actions`` dimensions). An action space that is neither Discrete nor
      a Box vector (MultiDiscrete, MultiBinary, Dict, a Box of rank 2, ...), an
      observation space that is not a Box (Dict, Tuple, Discrete, ...), or observations
      that are neither a vector nor stacked frames, is a ConfigError naming the space.
    """
    # Deferred on purpose: Gymnasium's spaces are imported once an environment exists
    # (EnvPool's spaces are Gymnasium's too).
    from gymnasium import spaces

    space = env.action_space
    name = env_id or getattr(env, "env_id", "") or type(env.spec).__name__.removesuffix("EnvSpec")
    continuous = isinstance(space, spaces.Box)
    if continuous and (len(space.shape) != 1 or space.shape[0] < 1):
        raise ConfigError(
            f"--env={name!r} is invalid: its action space {describe_space(space)} is not a "
            "vector; paac takes continuous actions as a Box of shape (D,), D >= 1"
        )
    if continuous and not np.issubdtype(space.dtype, np.floating):
        raise ConfigError(
            f"--env={name!r} is invalid: its action space {describe_space(space)} is a Box "
            "of integers; paac takes continuous actions as a Box of floats"
        )
    if not continuous and not isinstance(space, spaces.Discrete):
        raise ConfigError(
            f"--env={name!r} is invalid: its action space {describe_space(space)} is neither "
            "Discrete nor a Box; paac supports those two"
        )
    obs_space = env.observation_space
    if not isinstance(obs_space, spaces.Box):
        raise ConfigError(
            f"--env={name!r} is invalid: its observation space {describe_space(obs_space)} "
            "is not a Box; paac takes a Box of vectors or of stacked frames"
        )
    shape = tuple(int(d) for d in obs_space.shape)
    if len(shape) not in (1, 3):
        raise ConfigError(
            f"--env={name!r} is invalid: its observations ({type(obs_space).__name__} of shape "
            f"{shape}) are neither stacked frames nor a vector; paac supports those two"
        )
    return EnvSpec(
        obs_shape=shape,
        obs_dtype=np.dtype(obs_space.dtype),
        num_actions=int(space.shape[0]) if continuous else int(space.n),
        is_image=len(shape) == 3,
        continuous=continuous,
    )


def check_arch(config: Config, spec: EnvSpec) -> None:
    """The torso must match the observations (images for nips/nature, vectors for mlp), and
    the algorithm the actions (the value-based methods take discrete ones)."""
    if not spec.continuous:
        for field in ("policy_std", "log_std_init"):
            value = getattr(config, field)
            if value != Config.__dataclass_fields__[field].default:
                raise ConfigError(
                    f"{flag(field)}={value!r} is invalid for --env={config.env!r}: its actions "
                    "are discrete, and it sets the Gaussian policy of continuous actions"
                )
    if spec.continuous and config.algo in VALUE_ALGOS:
        raise ConfigError(
            f"--algo={config.algo!r} is invalid for --env={config.env!r}: its actions are "
            f"continuous (a vector of {spec.num_actions}), and the value-based methods need "
            "Discrete actions; use --algo a2c"
        )
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
