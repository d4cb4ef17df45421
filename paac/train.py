"""The training loop: the one place with side effects (environments, logs, progress).

Rollout and update placement, chosen by measurement on XLA:CPU: the rollout is a
Python loop over ``t_max`` steps that calls the jitted ``act`` (one forward pass on
``n_envs`` observations) and EnvPool's C++ ``step``; the update is one jitted call
per rollout. A gradient step placed inside ``lax.scan`` runs several times slower on
XLA:CPU, and the per-step Python overhead (tens of microseconds) is small next to an
environment step; the same code runs unchanged on a GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import signal
import sys
import time
from typing import NamedTuple

import jax
import numpy as np

from paac.checkpoints import (
    CHECKPOINT_SUBDIR,
    Checkpointer,
    CheckpointError,
    check_resume_config,
    config_from_meta,
    holds_checkpoint,
    latest_step,
    location_of,
    read_meta,
    restore,
    run_dir_of,
)
from paac.config import Config, ConfigError, flag
from paac.distributed import DataParallel, initialize
from paac.envs import EpisodeStats, check_arch, env_spec, make_training_env
from paac.learner import (
    Batch,
    LearnerState,
    check_state_fits,
    init_state,
    make_algorithm,
    network_for,
    state_template,
)
from paac.metrics import MetricsWriter, truncate_metrics, write_atomic
from paac.signals import StopSignals


class TrainResult(NamedTuple):
    state: LearnerState
    run_dir: str
    steps: int
    episodes: int
    score_last20: float | None
    interrupted: bool
    signal: int | None  # the signal that stopped the run, if one did


def segment_env_seed(seed: int, update: int) -> int:
    """The environment seed of the segment that starts at ``update``.

    Every checkpoint starts a new segment: the environments restart from fresh episodes
    with this seed, whether the run goes on or is resumed later from that checkpoint, so
    that a resumed run is exactly the run that never stopped (EnvPool's state cannot be
    saved). The first segment uses ``seed`` itself.
    """
    if update == 0:
        return seed
    return int(np.random.SeedSequence([seed, update]).generate_state(1)[0] % 2**31)


def _segment_env(config: Config, update: int, dp: DataParallel):
    """This process's training environments of the segment that starts at ``update``.

    Process ``p`` runs environments ``[offset, offset + n_local)`` of the run; EnvPool seeds
    environment ``i`` of a pool with ``seed + i`` (wrapping in int32), so its pool starts at
    ``seed + offset`` and the processes' pools together are the one pool of ``n_e``.
    """
    seed = segment_env_seed(config.seed, update) + dp.env_offset
    seed = (seed + 2**31) % 2**32 - 2**31
    return make_training_env(config, seed=seed, num_envs=dp.n_local)


def make_run_dir(config: Config) -> str:
    """``<out_dir>/<env>/<run_name>``, created; a clear ConfigError if it cannot be, or if
    it already holds a run (which only ``--resume`` may continue)."""
    base = config.run_name or f"{config.arch}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(config.out_dir, config.env, base)
    suffix = 1
    while _holds_run(run_dir):
        if config.run_name is not None:
            if holds_checkpoint(os.path.join(run_dir, CHECKPOINT_SUBDIR)):
                how = f"continue it with --resume {run_dir}"
            else:
                how = "it saved no checkpoint to resume: delete it"
            raise ConfigError(
                f"--run-name={config.run_name!r} is invalid: {run_dir!r} already holds a run; "
                f"{how}, or choose another --run-name"
            )
        suffix += 1  # two automatic names in the same second
        run_dir = os.path.join(config.out_dir, config.env, f"{base}-{suffix}")
    check_writable(run_dir, "out_dir", config.out_dir)
    return run_dir


def _holds_run(run_dir: str) -> bool:
    return any(
        os.path.exists(os.path.join(run_dir, name)) for name in ("metrics.csv", "checkpoints")
    )


class RunLock:
    """An exclusive ``flock`` on ``<run_dir>/.lock``, which holds the pid of the process
    training the run.

    A second process (say, ``--resume`` on a run still going) is refused. The kernel drops
    the lock when its holder ends, however it ends, so a lock left by a killed process is
    no lock: there is no stale file to judge and take over, and two processes starting at
    once cannot both win.
    """

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, ".lock")
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                owner = _read_pid(fd)
                os.close(fd)
                by = f"process {owner}" if owner else "another process"
                raise ConfigError(
                    f"{os.path.dirname(self.path)!r} is being trained by {by}; "
                    "wait for it or stop it first"
                ) from None
            except OSError as e:  # a file system without locks: train unlocked
                os.close(fd)
                print(
                    f"paac: warning: cannot lock {self.path!r} ({e.strerror}); training unlocked",
                    file=sys.stderr,
                )
                return self
            try:  # the file we locked is still the lock (its holder may have removed it)
                if os.stat(self.path).st_ino == os.fstat(fd).st_ino:
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
        except OSError:  # a full disk, say: let go of the lock, or a retry here is refused
            os.close(fd)
            raise
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        # While still locked, so that a waiter then sees it is gone; and only our own file
        # (someone may have deleted it by hand, and another process made and locked a new one).
        with contextlib.suppress(FileNotFoundError):
            if os.stat(self.path).st_ino == os.fstat(self._fd).st_ino:
                os.remove(self.path)
        os.close(self._fd)  # releases the lock
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (OSError, ValueError):
        return None


def check_writable(run_dir: str, field: str, value: str) -> None:
    """Creates ``run_dir`` if needed; a ConfigError naming ``field`` if it cannot be
    created or written."""
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(
            f"{flag(field)}={value!r} is invalid: cannot write {run_dir!r} ({e.strerror})"
        ) from None


class RolloutCarry(NamedTuple):
    """What one rollout hands to the next."""

    key: jax.Array  # action-sampling RNG key
    obs: np.ndarray  # [N, *obs_shape]: the observations to act on next
    done_before: np.ndarray  # [N] bool: the last step was done (the next one is a reset step)
    pending_action: np.ndarray | None = None  # [N]: chosen ahead (Algorithm.lookahead)


def collect_rollout(
    env, act, state, carry: RolloutCarry, stats: EpisodeStats, t_max: int, lookahead: bool = False
) -> tuple[Batch, RolloutCarry]:
    """Steps every environment ``t_max`` times with ``act(state, obs, key)``.

    With ``lookahead`` it also acts on the observation after the last step; that action
    is ``Batch.next_action`` and is taken first in the next rollout.
    """
    key, obs, done_before, pending = carry
    n = obs.shape[0]
    obs_buf = np.empty((t_max,) + obs.shape, obs.dtype)
    action_buf = np.empty((t_max, n), np.int32)
    reward_buf = np.empty((t_max, n), np.float32)
    term_buf = np.empty((t_max, n), bool)
    trunc_buf = np.empty((t_max, n), bool)
    mask_buf = np.empty((t_max, n), np.float32)
    for t in range(t_max):
        obs_buf[t] = obs
        if pending is None:
            action, key = act(state, obs, key)
            action = np.asarray(action)
        else:
            action, pending = pending, None
        obs, reward, terminated, truncated, info = env.step(action)
        action_buf[t] = action
        reward_buf[t] = reward
        term_buf[t] = terminated
        trunc_buf[t] = truncated
        mask_buf[t] = ~done_before
        stats.step(reward, terminated, truncated, info, ~done_before)
        done_before = terminated | truncated
    if lookahead:
        pending, key = act(state, obs, key)
        pending = np.asarray(pending)
    batch = Batch(obs_buf, action_buf, reward_buf, term_buf, trunc_buf, mask_buf, obs, pending)
    return batch, RolloutCarry(key, obs, done_before, pending)


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    if not pending:
        return {}
    host = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def _warn_short_segments(config: Config, env) -> None:
    """Say so when interval checkpoints would cut games shorter than the time limit."""
    limit = getattr(env.spec.config, "max_episode_steps", 0)
    interval = config.checkpoint_interval
    if config.exact_resume and interval and interval // config.n_envs < limit:
        print(
            f"paac: warning: --checkpoint-interval={interval} restarts the environments every "
            f"{interval // config.n_envs} steps each, fewer than the {limit}-step time limit "
            f"of {config.env}: long games will be cut at checkpoints. Raise the interval to "
            f"at least {limit * config.n_envs}, or pass --no-exact-resume.",
            file=sys.stderr,
        )


class _Resume(NamedTuple):
    directory: str
    step: int
    meta: dict
    run_dir: str


def _prepare_resume(config: Config, dp: DataParallel) -> _Resume | None:
    if config.resume is None:
        return None
    try:
        meta, directory, step = read_meta(config.resume)
    except CheckpointError as e:
        raise CheckpointError(f"--resume={config.resume!r}: {e}") from None
    where = os.path.join(directory, str(step))
    latest = latest_step(directory)
    if step != latest:
        raise CheckpointError(
            f"--resume={config.resume!r} is the checkpoint at step {step}, but the run went "
            f"on to step {latest}: resuming from it would abandon the later checkpoints. "
            "Resume the run directory (its latest checkpoint), or copy the run directory "
            "and delete the later checkpoints in the copy"
        )
    saved = config_from_meta(meta, where)
    check_resume_config(saved, config, config.resume)
    if dp.is_main and int(meta["update"]) < config.num_updates:
        _warn_moved_segments(saved, config)
    run_dir = run_dir_of(directory)
    dp.agree(lambda: check_writable(run_dir, "resume", config.resume) or "")
    return _Resume(directory, step, meta, run_dir)


def _warn_moved_segments(saved: Config, config: Config) -> None:
    """With exact resume each interval checkpoint restarts the environments (a new
    segment); a resume that changes the interval, or exact resume itself, restarts them at
    other steps than the run so far would have: allowed, but no longer exact."""
    fields = ("checkpoint_interval", "exact_resume")
    changed = [f for f in fields if getattr(saved, f) != getattr(config, f)]
    if changed and (saved.exact_resume or config.exact_resume):
        given = ", ".join(f"{flag(f)}={getattr(config, f)!r}" for f in changed)
        had = ", ".join(f"{flag(f)}={getattr(saved, f)!r}" for f in changed)
        print(
            f"paac: warning: resuming with {given} where the run had {had}: with exact "
            "resume the environments restart at every interval checkpoint, so from here "
            "they restart at other steps, and the run no longer equals one trained "
            "without stopping",
            file=sys.stderr,
        )


def train(config: Config, *, progress: bool = True) -> TrainResult:
    """Trains ``config`` to ``total_steps`` (or ``target_score``), writing the run directory.

    Checkpoints are saved every ``checkpoint_interval`` steps, at the end, and when
    SIGINT/SIGTERM stops the run (after the current update). With ``config.resume`` the
    run continues from a checkpoint: counters, schedule, RNG and logs go on where they
    were; the environments restart from fresh episodes (see :func:`segment_env_seed`).

    The environments are split over ``config.devices`` devices and, under
    ``jax.distributed`` (``--coordinator-address`` ...), over several processes
    (:mod:`paac.distributed`): every process calls ``train`` with the same config, and
    process 0 alone writes the logs, the config and the run lock.
    """
    with StopSignals() as stop:
        return _set_up_and_train(config, progress, stop)


def _set_up_and_train(config: Config, progress: bool, stop: StopSignals) -> TrainResult:
    initialize(config.coordinator_address, config.num_processes, config.process_id)
    if config.mode != "sync" and jax.process_count() > 1:  # processes set by $JAX_* alone
        raise ConfigError(
            f"--mode={config.mode!r} is invalid: the async modes run on one device in one "
            f"process, and JAX's distributed runtime has {jax.process_count()} processes; "
            "use --mode sync"
        )
    # The async emulations run on one device; sync PAAC defaults to all of them.
    devices = 1 if config.mode != "sync" and config.devices is None else config.devices
    dp = DataParallel(config.n_envs, devices)
    _check_processes(config, dp)
    resume = _prepare_resume(config, dp)
    start_update = int(resume.meta["update"]) if resume else 0
    if dp.is_main and not resume and config.total_steps % config.batch_size:
        print(
            f"paac: note: --total-steps={config.total_steps} is not a multiple of the batch "
            f"(n_e x t_max = {config.batch_size}): the run ends at step "
            f"{config.num_updates * config.batch_size:,}",
            file=sys.stderr,
        )
    env = _segment_env(config, start_update, dp)
    lock = None

    def claim() -> str:  # process 0 only; the others are told the directory
        nonlocal lock
        run_dir = resume.run_dir if resume else make_run_dir(config)
        lock = RunLock(run_dir).__enter__()
        return run_dir

    try:
        stop.check_startup()
        spec = env_spec(env, config.env)
        check_arch(config, spec)
        check_state_fits(config, network_for(config, spec), spec)
        run_dir = dp.agree(claim)
    except BaseException:
        env.close()
        raise
    if resume:  # the run's config and checkpoints name where it is, not where it was made
        config = dataclasses.replace(config, **location_of(run_dir, config.env))
    try:
        if resume and start_update >= config.num_updates:
            return _finished_already(config, resume, env, spec, run_dir, dp, stop)
        return _train(config, resume, start_update, env, spec, run_dir, progress, dp, stop)
    finally:  # _train closed env
        if lock is not None:
            lock.__exit__()


def _check_processes(config: Config, dp: DataParallel) -> None:
    """``--num-processes`` and ``--process-id``, when given, must be what JAX's runtime says."""
    for field, value, actual in (
        ("num_processes", config.num_processes, dp.process_count),
        ("process_id", config.process_id, dp.process_index),
    ):
        if value is not None and value != actual:
            raise ConfigError(
                f"{flag(field)}={value!r} is invalid: JAX's distributed runtime says {actual} "
                "(jax.distributed was initialised with other settings)"
            )


class _LocalSteps:
    """Stands in for :class:`EpisodeStats` in :func:`collect_rollout` on one of several
    processes: keeps this process's per-step outcomes, ``[t_max, n_local]`` each, for
    :func:`_share_steps` to gather into the run's statistics."""

    def __init__(self, t_max: int, n_local: int):
        self.raw = np.zeros((t_max, n_local), np.float32)  # EnvPool's float32 rewards
        self.game_over = np.zeros((t_max, n_local), np.float32)
        self.valid = np.zeros((t_max, n_local), np.float32)
        self.t = 0

    def step(self, reward, terminated, truncated, info, valid) -> None:
        raw, game_over = EpisodeStats.outcome(reward, terminated, truncated, info)
        self.raw[self.t], self.game_over[self.t], self.valid[self.t] = raw, game_over, valid
        self.t += 1


def _share_steps(dp: DataParallel, local: _LocalSteps, stats: EpisodeStats, signum) -> int | None:
    """Every process's rollout outcomes into ``stats`` (the same on all processes, as one
    process stepping all ``n_e`` environments would have them), and the stop signal any
    process received (the largest number), so that all processes stop together."""
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


def _finished_already(config, resume, env, spec, run_dir, dp, stop) -> TrainResult:
    """A resume of a run that already reached its end: its final state; nothing is trained
    and nothing in the run directory is written."""
    env.close()
    network = network_for(config, spec)
    template = state_template(config, network, spec)
    state = restore(resume.directory, resume.step, template, dp.replicated).state
    stop.check_startup()
    stats = EpisodeStats(config.n_envs)
    stats.load(resume.meta.get("episode_stats", {}))
    steps = int(resume.meta["update"]) * config.batch_size
    if dp.is_main:
        print(
            f"paac: the run had already finished at step {steps:,}; nothing to train; "
            f"outputs in {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    return TrainResult(state, run_dir, steps, stats.episodes, stats.recent_mean, False, None)


def _train(config, resume, start_update, env, spec, run_dir, progress, dp, stop) -> TrainResult:
    main = dp.is_main
    try:
        network = network_for(config, spec)
        algorithm = make_algorithm(config, network, spec)
        if resume:
            template = state_template(config, network, spec)
            restored = restore(resume.directory, resume.step, template, dp.replicated)
            state, act_key = restored.state, restored.act_key
        else:
            init_key, act_key = jax.random.split(jax.random.PRNGKey(config.seed))
            state = dp.replicate(init_state(config, network, spec, init_key))
            act_key = dp.replicate(act_key)
        stop.check_startup()  # the last point at which a signal stops before training
    except BaseException:
        env.close()
        raise
    if main:
        write_atomic(os.path.join(run_dir, "config.json"), config.to_json())
    act = dp.jit_act(algorithm.act)
    update = dp.jit_update(algorithm.update)

    steps = start_update * config.batch_size
    stats = EpisodeStats(config.n_envs)  # of all n_e environments, on every process
    local_steps = _LocalSteps(config.t_max, dp.n_local) if dp.multiprocess else stats
    walltime_before = 0.0
    if resume:
        stats.load(resume.meta.get("episode_stats", {}))
        walltime_before = float(resume.meta.get("walltime", 0.0))
        if main:
            truncate_metrics(run_dir, steps)
    writer = None
    if main:
        # TensorBoard drops events at steps >= purge_step: those logged after the checkpoint.
        writer = MetricsWriter(run_dir, purge_step=steps + 1 if resume else None)
        _warn_short_segments(config, env)
    checkpointer = Checkpointer(run_dir, config.keep)
    bar = None
    if progress and main:
        from tqdm import tqdm

        bar = tqdm(
            total=config.num_updates * config.batch_size,
            initial=steps,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=1.0,
            desc=config.env,
        )

    obs, _ = env.reset()
    carry = RolloutCarry(act_key, obs, np.zeros(dp.n_local, bool))
    pending: list[dict] = []
    t_start = time.perf_counter() - walltime_before
    last_log_time, last_log_step = time.perf_counter(), steps
    last_save_step = steps
    interrupted = False
    signum: int | None = None  # the stop signal, agreed by all processes

    def log_row() -> None:
        nonlocal last_log_time, last_log_step, pending
        now = time.perf_counter()
        scores, lengths = stats.drain()
        if writer is not None:
            row = {
                "step": steps,
                "update": steps // config.batch_size,
                "walltime": now - t_start,
                "sps": (steps - last_log_step) / max(now - last_log_time, 1e-9),
                "score": float(np.mean(scores)) if scores else None,
                "score_last20": stats.recent_mean,
                "episodes": stats.episodes,
                "episode_length": float(np.mean(lengths)) if lengths else None,
                **_mean_metrics(pending),
            }
            writer.write(row)
        pending = []
        last_log_time, last_log_step = now, steps
        if bar is not None and stats.recent_mean is not None:
            bar.set_postfix(score=f"{stats.recent_mean:.1f}", refresh=False)

    def save() -> None:
        nonlocal last_save_step
        meta = {
            "config": config.to_dict(),
            "update": steps // config.batch_size,
            "episode_stats": stats.summary(),
            "walltime": time.perf_counter() - t_start,
        }
        checkpointer.save(steps, state, carry.key, meta)  # on every process: orbax syncs
        last_save_step = steps

    stop.started()  # a signal now stops the loop after its update (and saves)
    try:
        for u in range(start_update, config.num_updates):
            batch, carry = collect_rollout(
                env, act, state, carry, local_steps, config.t_max, algorithm.lookahead
            )
            state, metrics = update(state, batch)
            if main:
                pending.append(metrics)
            steps += config.batch_size
            if bar is not None:
                bar.update(config.batch_size)
            if dp.multiprocess:
                signum = _share_steps(dp, local_steps, stats, stop.signum)
            else:
                signum = stop.signum
            reached = (
                config.target_score is not None
                and stats.recent_full
                and stats.recent_mean >= config.target_score
            )
            last = reached or signum is not None or u + 1 == config.num_updates
            if steps - last_log_step >= config.log_interval or last:
                log_row()
            if last:
                break
            interval = config.checkpoint_interval
            if interval and steps // interval > last_save_step // interval:
                if steps > last_log_step:
                    log_row()  # a resumed run continues from a complete row
                with stop.deferred():
                    save()
                if config.exact_resume:
                    # A new segment: fresh episodes, as a run resumed from here sees.
                    env.close()
                    env = _segment_env(config, u + 1, dp)
                    obs, _ = env.reset()
                    carry = RolloutCarry(carry.key, obs, np.zeros(dp.n_local, bool))
                    stats.abandon_running()
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep the last checkpoint
        interrupted = True
    else:
        stop.shield()  # further signals must not cut the final save short
        if steps > last_save_step:
            save()
    finally:
        stop.shield()
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
        checkpointer.close()
        env.close()

    if signum is None:
        signum = stop.signum
    interrupted = interrupted or signum is not None
    what = "interrupted" if interrupted else "finished"
    score = stats.recent_mean
    score_txt = f", last-20 mean score {score:.2f}" if score is not None else ""
    if steps > last_save_step:  # a second Ctrl-C stopped it between checkpoints
        if resume or last_save_step:
            score_txt += f" (its last checkpoint is at step {last_save_step:,})"
        else:
            score_txt += " (no checkpoint was saved)"
    if main:
        print(
            f"paac: {what} at step {steps:,}{score_txt}; outputs in {run_dir}",
            file=sys.stderr,
            flush=True,
        )
    signum = signum if signum is not None else (signal.SIGINT if interrupted else None)
    return TrainResult(state, run_dir, steps, stats.episodes, score, interrupted, signum)
