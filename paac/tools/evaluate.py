"""Evaluation: restore a checkpoint, play whole games, report raw scores, record a video.

Games are played as scores are reported: Atari without reward clipping or episodic
life (a game ends when all lives are lost or at the 27,000-step limit), up to 30 no-op
starts, the raw game score. Everything needed comes from the checkpoint itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import warnings
from typing import Any

import imageio.v2 as imageio
import jax
import numpy as np
from PIL import Image, ImageDraw

from paac.algorithms.build import make_algorithm, network_for, state_template
from paac.algorithms.normalize import frozen_policy
from paac.core.config import VALUE_ALGOS, ConfigError
from paac.core.tasks import is_atari
from paac.run.agents import check_agent_spec, is_agent_dir, load_agent
from paac.run.checkpoints import config_from_meta, read_meta, restore, run_dir_of
from paac.run.envs import check_arch, env_spec, make_env, render_problem
from paac.run.memory import format_bytes, host_memory
from paac.run.metrics import write_atomic

VIDEO_SUFFIXES = (".mp4", ".gif")
ATARI_FPS = 60  # the Atari 2600's frame rate: an agent step of k frames lasts k / 60 s


def _check_video_path(video: str) -> None:
    if not video.lower().endswith(VIDEO_SUFFIXES):
        raise ConfigError(f"--video={video!r} is invalid: the name must end in .mp4 or .gif")
    if os.path.isdir(video):
        raise ConfigError(f"--video={video!r} is invalid: it is a directory")
    parent = os.path.dirname(os.path.abspath(video))
    if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
        raise ConfigError(f"--video={video!r} is invalid: cannot write in {parent!r}")


def _check_fps(fps: float | None) -> None:
    if fps is not None and (
        isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 1000
    ):
        raise ConfigError(f"--fps={fps!r} is invalid: must be a number in (0, 1000]")


def video_fps(env_id: str, frame_skip: int | None) -> float:
    """Real-time frames per second of a video with one frame per agent step.

    For Atari 60 / frame skip (15 with the usual skip of 4), else 30.
    """
    return ATARI_FPS / frame_skip if is_atari(env_id) and frame_skip else 30.0


def _burn_in(frame: np.ndarray, text: str) -> np.ndarray:
    """The frame with ``text`` written at its top-left corner, on a dark box."""
    img = Image.fromarray(frame)
    draw = ImageDraw.Draw(img)
    left, top, right, bottom = draw.textbbox((2, 1), text)
    draw.rectangle((0, 0, right + 2, bottom + 2), fill=(0, 0, 0))
    draw.text((2, 1), text, fill=(255, 255, 255))
    return np.asarray(img)


class VideoWriter:
    """Writes RGB frames to a video at ``path`` as they come.

    .mp4 is streamed to ffmpeg, .gif kept as palette images (a third of the RGB frames'
    memory) until :meth:`close`. Written to a temporary file that ``close`` renames into
    place; nothing is left behind on failure.
    """

    def __init__(self, path: str, fps: float = 30):
        root, suffix = os.path.splitext(path)
        self.path, self.fps, self.frames = path, fps, 0
        self._tmp = f"{root}.partial{suffix}"
        self._gif: list | None = [] if suffix.lower() == ".gif" else None
        self._mp4 = None
        if self._gif is None:
            with _no_fork_warning():
                self._mp4 = imageio.get_writer(
                    self._tmp, fps=fps, codec="libx264", macro_block_size=2
                )

    def add(self, frame: np.ndarray) -> None:
        """Appends one RGB frame ``[H, W, 3]`` (uint8)."""
        if self._gif is not None:
            self._gif.append(Image.fromarray(frame).quantize(256))
        else:
            with _no_fork_warning():
                self._mp4.append_data(frame)
        self.frames += 1

    def close(self) -> None:
        """Finishes the file and renames it into place."""
        try:
            if self._gif is not None:
                first, *rest = self._gif
                # GIF delays are in 10 ms units: rounding the frames' times (not each delay)
                # keeps the whole at the frame rate, e.g. 60, 70, 70, 60, ... ms at 15 fps.
                ends = [round((i + 1) * 100 / self.fps) * 10 for i in range(len(self._gif))]
                duration = [b - a for a, b in zip([0, *ends[:-1]], ends, strict=True)]
                first.save(self._tmp, save_all=True, append_images=rest, duration=duration, loop=0)
            else:
                mp4, self._mp4 = self._mp4, None
                mp4.close()
            os.replace(self._tmp, self.path)
        finally:
            self.discard()

    def discard(self) -> None:
        """Drops what was written (the temporary file), as after a failure."""
        self._gif = None
        if self._mp4 is not None:
            with contextlib.suppress(Exception):
                self._mp4.close()
            self._mp4 = None
        if os.path.isfile(self._tmp):
            os.remove(self._tmp)


VIDEO_ERRORS = (OSError, RuntimeError)  # ffmpeg's failures come as either


def _reason(e: Exception) -> str:
    """An OSError's strerror, else the exception's text (ffmpeg fails with RuntimeErrors)."""
    return getattr(e, "strerror", None) or str(e) or type(e).__name__


@contextlib.contextmanager
def _no_fork_warning():
    """JAX warns on any fork; ffmpeg is fork + exec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="os.fork", category=RuntimeWarning)
        yield


def evaluate(
    path: str,
    episodes: int = 10,
    greedy: bool = False,
    seed: int | None = None,
    video: str | None = None,
    num_envs: int | None = None,
    write_json: bool = True,
    fps: float | None = None,
) -> dict[str, Any]:
    """Plays ``episodes`` whole games with the policy of the checkpoint at ``path``.

    ``path`` is a run directory (its latest checkpoint), a ``checkpoints/<step>``
    directory, or an agent folder (:func:`paac.run.agents.export_agent`; no statistics
    file is written into it). Games run on ``num_envs`` environments (default
    ``min(episodes, 16)``), each playing a fixed quota, so short games are not favoured.
    With ``video`` the first game of environment 0 is recorded at the game's native
    resolution with the running score burned in, at ``fps`` frames per second (default:
    real time for Atari, see :func:`video_fps`, else 30). Returns the statistics, also
    written as ``<run_dir>/eval-<step>-<policy>.json`` (greedy or sampled). An output that
    cannot be written (a read-only run directory, a full disk) loses nothing else: the
    statistics are returned with the reason in ``stats["problems"]``.

    Args:
      path: a run directory, a ``checkpoints/<step>`` directory or an agent folder.
      episodes: how many whole games to play, at least 1.
      greedy: take the most probable action instead of sampling (value-based agents are
        always played greedily).
      seed: the environments' and the sampling's seed in ``[0, 2**31)``; None for one the
        training run did not use (its seed + 1,000,003, modulo 2**31).
      video: a path ending in .mp4 or .gif to record the first game to, or None.
      num_envs: environments to play on (default ``min(episodes, 16)``; never more than
        ``episodes``).
      write_json: also write the statistics to ``<run_dir>/eval-<step>-<policy>.json``.
      fps: the video's frame rate in ``(0, 1000]``; None for :func:`video_fps`.

    Returns:
      The statistics: ``mean``, ``std``, ``min``, ``max`` of the raw scores, ``scores``
      and ``lengths`` per game, ``steps`` played, ``seconds``, the checkpoint, policy and
      seed, the video's path, frames, fps and game, ``json`` (the file written, when it
      was) and ``problems``. Impossible arguments are a ConfigError.
    """
    if not isinstance(episodes, int) or episodes < 1:
        raise ConfigError(f"--episodes={episodes!r} is invalid: must be an integer >= 1")
    if num_envs is not None and (not isinstance(num_envs, int) or num_envs < 1):
        raise ConfigError(f"--num-envs={num_envs!r} is invalid: must be an integer >= 1")
    if video is not None:
        _check_video_path(video)
    _check_fps(fps)
    agent = load_agent(path) if is_agent_dir(path) else None  # an exported agent folder
    if agent is None:
        meta, directory, step = read_meta(path)
        where = os.path.join(directory, str(step))
        config = config_from_meta(meta, where)
    else:
        config, step, where = agent.config, agent.step, os.path.abspath(path)
    n = min(num_envs or 16, episodes)
    if seed is None:  # a stream the training run did not use
        seed = (config.seed + 1_000_003) % 2**31
    elif not isinstance(seed, int) or not 0 <= seed < 2**31:
        raise ConfigError(f"--seed={seed!r} is invalid: must be an integer in [0, 2**31)")
    if video is not None:
        problem = render_problem(config.env)
        if problem:
            raise ConfigError(f"--video is invalid for --env={config.env!r}: {problem}")
    extra = {"render_mode": "rgb_array"} if video else {}
    env = make_env(config.env, n, seed, training=False, num_threads=config.num_threads, **extra)
    try:
        spec = env_spec(env, config.env)
        check_arch(config, spec)
        network = network_for(config, spec)
        if agent is None:
            state = restore(directory, step, state_template(config, network, spec)).state
            params, norm = state.params, state.norm
        else:
            check_agent_spec(agent, spec, path)
            params, norm = agent.params, agent.norm
        greedy = greedy or config.algo in VALUE_ALGOS  # value-based agents are played greedily
        algorithm = make_algorithm(config, network, spec)
        policy = algorithm.policy(greedy)
        # Observations normalised with the statistics saved with the parameters (frozen).
        act = jax.jit(frozen_policy(policy, norm, config.norm_clip))
        if video is not None and fps is None:
            fps = video_fps(config.env, env.config.get("frame_skip"))
        memory = None if algorithm.memory is None else algorithm.memory(n)
        # Trained with episodic life, the memory never outlived a life: nor does it here.
        life_resets = memory is not None and is_atari(config.env) and config.episodic_life
        result = _play(env, act, params, episodes, n, seed, video, fps, memory, life_resets)
    finally:
        env.close()
    problems = []
    recording = result["recording"]
    if recording is not None and recording.problem:
        problems.append(recording.problem)
        video = None
    stats = {
        "checkpoint": where,
        "env": config.env,
        "arch": config.arch,
        "algo": config.algo,
        "step": step,
        "episodes": episodes,
        "policy": "greedy" if greedy or config.algo in VALUE_ALGOS else "sampled",
        "seed": seed,
        "mean": float(np.mean(result["scores"])),
        "std": float(np.std(result["scores"])),
        "min": float(np.min(result["scores"])),
        "max": float(np.max(result["scores"])),
        "steps": int(np.sum(result["lengths"])),
        "scores": result["scores"],
        "lengths": result["lengths"],
        "seconds": result["seconds"],
        "video": os.path.abspath(video) if video else None,
        "video_frames": recording.frames if video else 0,
        "video_fps": fps if video else None,
        "video_game": recording.game if video else None,  # (score, steps) of the recorded game
    }
    if write_json and agent is None:  # an agent folder (perhaps in a clone) is left as it is
        out = os.path.join(run_dir_of(directory), f"eval-{step}-{stats['policy']}.json")
        try:
            write_atomic(out, json.dumps(stats, indent=2))
            stats["json"] = out
        except OSError as e:
            problems.append(f"cannot write {out!r} ({e.strerror or e})")
    stats["problems"] = problems
    return stats


class _Recording:
    """Environment 0's first game, framed as it is played, into a :class:`VideoWriter`.

    A write that fails stops the recording and is kept as ``problem``.
    """

    def __init__(self, path: str, fps: float, max_steps: int = 0):
        self.path, self.frames, self.problem = path, 0, None
        self._max_steps = max_steps  # the game's time limit (0: none known)
        self.game: tuple[float, int] | None = None  # (score, steps) once recorded
        self._writer = None
        try:
            self._writer = VideoWriter(path, fps)
        except VIDEO_ERRORS as e:
            self._failed(e)

    @property
    def on(self) -> bool:
        return self._writer is not None

    def add(self, env, score: float) -> None:
        frame = env.render(env_ids=[0])[0]
        if self._writer.frames == 0 and not self._fits(frame):
            return
        try:
            self._writer.add(_burn_in(frame, f"score {score:g}"))
        except VIDEO_ERRORS as e:
            self._failed(e)

    def _fits(self, frame: np.ndarray) -> bool:
        """A GIF holds a palette image (a byte a pixel) of every frame until the game ends:
        refused, before it holds more than this first frame, if a game as long as the time
        limit would not fit in the host's memory."""
        if not self.path.lower().endswith(".gif") or not self._max_steps:
            return True
        need = frame.shape[0] * frame.shape[1] * (self._max_steps + 1)
        have = host_memory()
        if need <= have:
            return True
        self.problem = (
            f"cannot record the video {self.path!r}: a GIF of a whole game could hold "
            f"{format_bytes(need)} ({self._max_steps + 1} frames of {frame.shape[1]} x "
            f"{frame.shape[0]}), more than the host's {format_bytes(have)} of memory; record an "
            ".mp4, which is streamed"
        )
        self.discard()
        return False

    def finish(self, game: tuple[float, int]) -> None:
        try:
            self._writer.close()
            self.frames, self.game = self._writer.frames, game
        except VIDEO_ERRORS as e:
            self._failed(e)
        self._writer = None

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.discard()
            self._writer = None

    def _failed(self, e: Exception) -> None:
        self.problem = f"cannot write the video {self.path!r} ({_reason(e)})"
        self.discard()


def _play(
    env,
    act,
    params,
    episodes: int,
    n: int,
    seed: int,
    video: str | None,
    fps: float | None,
    memory=None,
    life_resets: bool = False,
) -> dict:
    """Plays the games; a recurrent policy's ``memory`` is carried through each whole game
    and zeroed on the first observation of the next (after the reset step), and with
    ``life_resets`` on the first observation after a lost life too."""
    quota = np.full(n, episodes // n) + (np.arange(n) < episodes % n)
    played = np.zeros(n, np.int64)
    returns = np.zeros(n, np.float64)
    lengths = np.zeros(n, np.int64)
    done_before = np.zeros(n, bool)
    start = np.ones(n, bool)
    previous_lives = None  # known from the first step on
    scores: list[float] = []
    game_lengths: list[int] = []
    key = jax.random.PRNGKey(seed)
    obs, _ = env.reset()
    max_steps = int(getattr(env.spec.config, "max_episode_steps", 0) or 0)
    recording = _Recording(video, fps, max_steps) if video is not None else None
    if recording is not None and recording.on:
        recording.add(env, 0)
    t0 = time.perf_counter()
    try:
        while (played < quota).any():
            if memory is None:
                actions, key = act(params, obs, key)
            else:
                actions, key, memory = act(params, obs, key, memory, start)
            obs, reward, terminated, truncated, info = env.step(np.asarray(actions))
            raw = np.asarray(info.get("reward", reward), np.float64)
            over = np.asarray(info.get("terminated", terminated), bool) | np.asarray(
                truncated, bool
            )
            returns += raw
            lengths += ~done_before
            if recording is not None and recording.on:
                recording.add(env, returns[0])
                if over[0] and recording.on:
                    recording.finish((float(returns[0]), int(lengths[0])))
            for i in np.flatnonzero(over):
                if played[i] < quota[i]:
                    scores.append(float(returns[i]))
                    game_lengths.append(int(lengths[i]))
                    played[i] += 1
            returns[over] = 0.0
            lengths[over] = 0
            start = done_before  # after a reset step: a new game's first observation
            if life_resets and "lives" in info:
                lives = np.asarray(info["lives"])
                if previous_lives is not None:
                    start = start | (lives < previous_lives)
                previous_lives = lives
            done_before = np.asarray(terminated, bool) | np.asarray(truncated, bool)
    finally:
        if recording is not None:
            recording.discard()  # a game cut short (Ctrl-C): no partial file left
    return {
        "scores": scores,
        "lengths": game_lengths,
        "seconds": time.perf_counter() - t0,
        "recording": recording,
    }


def format_report(stats: dict) -> str:
    """The statistics of :func:`evaluate` as a few lines of text for the console."""
    lines = [
        f"{stats['env']} ({stats['arch']}), checkpoint at step {stats['step']:,}: "
        f"{stats['episodes']} games, {stats['policy']} policy",
        f"  score  mean {stats['mean']:.2f}  std {stats['std']:.2f}  "
        f"min {stats['min']:g}  max {stats['max']:g}",
        f"  steps played {stats['steps']:,} in {stats['seconds']:.1f} s",
    ]
    if stats.get("video"):
        lines.append(
            f"  video  {stats['video']} "
            f"({stats['video_frames']} frames at {stats['video_fps']:g} fps)"
        )
    if stats.get("json"):
        lines.append(f"  json   {stats['json']}")
    return "\n".join(lines)
