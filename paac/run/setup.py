"""Setting a run up, and the :class:`Run` that the loop in :mod:`paac.run.train` advances.

:func:`start` joins the processes and picks the devices, reads the run to resume, makes the
environments and claims the run directory and its lock; :func:`build` then makes the learner
state (fresh or restored), the jitted functions, the writers and the checkpointer.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import numpy as np
from tqdm import tqdm

from paac.algorithms.build import init_state, make_algorithm, network_for, state_template
from paac.algorithms.common import check_finite
from paac.core.config import Config, ConfigError, flag
from paac.core.types import Algorithm, EnvSpec, LearnerState
from paac.run.checkpoints import Checkpointer, location_of, restore
from paac.run.distributed import DataParallel, initialize
from paac.run.envs import EpisodeStats, check_arch, env_spec
from paac.run.memory import check_rollout_fits, check_state_fits
from paac.run.metrics import MetricsWriter, truncate_metrics, write_atomic
from paac.run.resume import Resume, prepare_resume, segment_env, warn_short_segments
from paac.run.rollout import LocalSteps, RolloutCarry, initial_carry, share_steps
from paac.run.rundir import RunLock, make_run_dir
from paac.run.signals import StopSignals


class Start(NamedTuple):
    """A run about to be trained: its placement, resume, environments, directory and lock.

    ``lock`` is process 0's run lock; None on the other processes.
    """

    config: Config
    dp: DataParallel
    resume: Resume | None
    start_update: int
    env: Any
    spec: EnvSpec
    run_dir: str
    lock: RunLock | None

    @property
    def finished(self) -> bool:
        """A resume of a run that already reached its last update."""
        return self.resume is not None and self.start_update >= self.config.last_update


def start(config: Config, stop: StopSignals) -> Start:
    """Everything before the learner state: processes, resume, environments, run directory.

    It joins the processes, reads the run to resume, makes this process's environments and
    claims the run directory: everything that can refuse the run before any learner state
    is made. Environments made here are closed again if a later step fails.
    """
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
    resume = prepare_resume(config, dp)
    start_update = int(resume.meta["update"]) if resume else 0
    if dp.is_main and not resume and config.total_steps % config.batch_size:
        print(
            f"paac: note: --total-steps={config.total_steps} is not a multiple of the batch "
            f"(n_e x t_max = {config.batch_size}): the run ends at step "
            f"{config.num_updates * config.batch_size:,}",
            file=sys.stderr,
        )
    env = segment_env(config, start_update, dp)
    locks: list[RunLock] = []

    def claim() -> str:  # process 0 only; the others are told the directory
        run_dir = resume.run_dir if resume else make_run_dir(config)
        locks.append(RunLock(run_dir).__enter__())
        return run_dir

    try:
        stop.check_startup()
        spec = env_spec(env, config.env)
        check_arch(config, spec)
        network = network_for(config, spec)
        check_state_fits(config, network, spec)
        check_rollout_fits(config, network, spec, dp.n_local)
        run_dir = dp.agree(claim)
    except BaseException:
        env.close()
        raise
    if resume:  # the run's config and checkpoints name where it is, not where it was made
        config = dataclasses.replace(config, **location_of(run_dir, config.env))
    lock = locks[0] if locks else None
    return Start(config, dp, resume, start_update, env, spec, run_dir, lock)


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


def restore_final(s: Start, stop: StopSignals) -> tuple[LearnerState, EpisodeStats]:
    """The final state and episode statistics of a run that already finished.

    Its environments are closed and nothing in its directory is written.
    """
    s.env.close()
    template = state_template(s.config, network_for(s.config, s.spec), s.spec)
    state = restore(s.resume.directory, s.resume.step, template, s.dp.replicated).state
    stop.check_startup()
    stats = EpisodeStats(s.config.n_envs)
    stats.load(s.resume.meta.get("episode_stats", {}))
    return state, stats


@dataclasses.dataclass
class Run:
    """A run being trained: what the loop reads, and the counters and state it advances."""

    config: Config
    dp: DataParallel
    stop: StopSignals
    run_dir: str
    resume: Resume | None
    start_update: int
    env: Any
    algorithm: Algorithm
    act: Callable  # jitted over the devices: (state, obs, key) -> (actions, key)
    update: Callable  # jitted over the devices: (state, batch) -> (state, metrics, finite)
    state: LearnerState
    carry: RolloutCarry
    stats: EpisodeStats  # of all n_e environments, on every process
    local_steps: EpisodeStats | LocalSteps  # what the rollout records into
    writer: MetricsWriter | None  # process 0 only
    checkpointer: Checkpointer
    bar: Any  # tqdm progress bar, or None
    steps: int  # environment steps so far
    t_start: float  # perf_counter at step 0, counting the wall time of earlier starts
    last_log_time: float = 0.0
    last_log_step: int = 0
    last_save_step: int = 0
    pending: list = dataclasses.field(default_factory=list)  # update metrics since the last row
    nonfinite: str | None = None  # what went non-finite, and in which update
    write_error: str | None = None  # the write that failed, and why

    def after_update(self, metrics: dict) -> int | None:
        """Counts one update's steps and keeps its metrics; returns the agreed stop signal.

        The processes agree on the signal (the largest any received), and pool their
        rollout's episode outcomes here.
        """
        if self.dp.is_main:
            self.pending.append(metrics)
        self.steps += self.config.batch_size
        if self.bar is not None:
            self.bar.update(self.config.batch_size)
        if self.dp.multiprocess:
            return share_steps(self.dp, self.local_steps, self.stats, self.stop.signum)
        return self.stop.signum

    @property
    def reached_target(self) -> bool:
        """The mean score of the last 20 games is at ``--target-score``."""
        target = self.config.target_score
        return target is not None and self.stats.recent_full and self.stats.recent_mean >= target

    @property
    def log_due(self) -> bool:
        """``--log-interval`` steps have passed since the last metrics row."""
        return self.steps - self.last_log_step >= self.config.log_interval

    @property
    def checkpoint_due(self) -> bool:
        """The last update crossed a multiple of ``--checkpoint-interval``."""
        interval = self.config.checkpoint_interval
        return bool(interval) and self.steps // interval > self.last_save_step // interval

    def log_row(self) -> None:
        """Writes a metrics row of everything since the last one (process 0)."""
        now = time.perf_counter()
        scores, lengths = self.stats.drain()
        if self.writer is not None:
            self.writer.write(
                {
                    "step": self.steps,
                    "update": self.steps // self.config.batch_size,
                    "walltime": now - self.t_start,
                    "sps": (self.steps - self.last_log_step) / max(now - self.last_log_time, 1e-9),
                    "score": float(np.mean(scores)) if scores else None,
                    "score_last20": self.stats.recent_mean,
                    "episodes": self.stats.episodes,
                    "episode_length": float(np.mean(lengths)) if lengths else None,
                    **_mean_metrics(self.pending),
                }
            )
        self.pending = []
        self.last_log_time, self.last_log_step = now, self.steps
        if self.bar is not None and self.stats.recent_mean is not None:
            self.bar.set_postfix(score=f"{self.stats.recent_mean:.1f}", refresh=False)

    def save(self) -> None:
        """Checkpoints the run at its current step (on every process: orbax syncs them)."""
        meta = {
            "config": self.config.to_dict(),
            "update": self.steps // self.config.batch_size,
            "episode_stats": self.stats.summary(),
            "walltime": time.perf_counter() - self.t_start,
        }
        self.checkpointer.save(self.steps, self.state, self.carry.key, meta)
        self.last_save_step = self.steps

    def checkpoint(self, next_update: int) -> None:
        """An interval checkpoint: a complete metrics row, the save, then a new segment.

        With exact resume the environments restart from fresh episodes, as the segment
        that starts at ``next_update`` (:func:`paac.run.resume.segment_env`).
        """
        if self.steps > self.last_log_step:
            self.log_row()  # a resumed run continues from a complete row
        if self.config.exact_resume:  # saved as the new segment starts: fresh episodes
            self.state = start_episodes(self.state, self.dp)
        with self.stop.deferred():
            self.save()
        if self.config.exact_resume:
            # A new segment: fresh episodes, as a run resumed from here sees.
            self.env.close()
            self.env = segment_env(self.config, next_update, self.dp)
            obs, _ = self.env.reset()
            self.carry = initial_carry(self.carry.key, obs, self.algorithm.memory)
            self.stats.abandon_running()

    def close(self) -> None:
        """Closes the progress bar, the writers, the checkpointer and the environments."""
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        self.checkpointer.close()
        self.env.close()


def start_episodes(state: LearnerState, dp: DataParallel) -> LearnerState:
    """``state`` for environments that start fresh episodes: no running return carried.

    Reward normalisation keeps each environment's discounted return so far
    (``norm["return"]``); environments restarted (a new segment, a resume) begin at 0.
    """
    if "return" not in state.norm:
        return state
    zeros = np.zeros(state.norm["return"].shape, np.float32)
    return state._replace(norm={**state.norm, "return": dp.replicate(zeros)})


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    if not pending:
        return {}
    host = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def build(s: Start, stop: StopSignals, progress: bool) -> Run:
    """The :class:`Run` of a run that will train; writes its ``config.json``.

    It makes the learner state (fresh, or restored from the checkpoint to resume), the
    jitted ``act`` and ``update``, the writers and the checkpointer. The environments are
    closed if making the state fails.
    """
    config, dp, resume = s.config, s.dp, s.resume
    try:
        network = network_for(config, s.spec)
        algorithm = make_algorithm(config, network, s.spec)
        if resume:
            template = state_template(config, network, s.spec)
            restored = restore(resume.directory, resume.step, template, dp.replicated)
            state, act_key = start_episodes(restored.state, dp), restored.act_key
        else:
            init_key, act_key = jax.random.split(jax.random.PRNGKey(config.seed))
            state = dp.replicate(init_state(config, network, s.spec, init_key))
            act_key = dp.replicate(act_key)
        stop.check_startup()  # the last point at which a signal stops before training
    except BaseException:
        s.env.close()
        raise
    main = dp.is_main
    if main:
        write_atomic(os.path.join(s.run_dir, "config.json"), config.to_json())
    steps = s.start_update * config.batch_size
    stats = EpisodeStats(config.n_envs)
    walltime_before = 0.0
    if resume:
        stats.load(resume.meta.get("episode_stats", {}))
        walltime_before = float(resume.meta.get("walltime", 0.0))
        if main:
            truncate_metrics(s.run_dir, steps)
    writer = None
    if main:
        # TensorBoard drops events at steps >= purge_step: those logged after the checkpoint.
        writer = MetricsWriter(s.run_dir, purge_step=steps + 1 if resume else None)
        warn_short_segments(config, s.env)
    checkpointer = Checkpointer(s.run_dir, config.keep)
    bar = None
    if progress and main:
        bar = tqdm(
            total=config.last_update * config.batch_size,
            initial=steps,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=1.0,
            desc=config.env,
        )
    obs, _ = s.env.reset()
    now = time.perf_counter()
    return Run(
        config=config,
        dp=dp,
        stop=stop,
        run_dir=s.run_dir,
        resume=resume,
        start_update=s.start_update,
        env=s.env,
        algorithm=algorithm,
        act=dp.jit_act(algorithm.act, recurrent=algorithm.memory is not None),
        update=dp.jit_update(check_finite(algorithm.update)),
        state=state,
        carry=initial_carry(act_key, obs, algorithm.memory),
        stats=stats,
        local_steps=LocalSteps(config.t_max, dp.n_local) if dp.multiprocess else stats,
        writer=writer,
        checkpointer=checkpointer,
        bar=bar,
        steps=steps,
        t_start=now - walltime_before,
        last_log_time=now,
        last_log_step=steps,
        last_save_step=steps,
    )
