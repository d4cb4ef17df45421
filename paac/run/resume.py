"""Exact resume: the environment segments, and reading the run that ``--resume`` continues.

EnvPool's emulator state cannot be saved, so every interval checkpoint starts a new
segment: the environments restart from fresh episodes with a seed derived from the run
seed and the update counter, whether the run goes on or is resumed from there later.
A run resumed from an interval checkpoint is then exactly the run that never stopped.
"""

from __future__ import annotations

import os
import sys
from typing import NamedTuple

import numpy as np

from paac.core.config import Config, flag
from paac.run.checkpoints import (
    CheckpointError,
    check_resume_config,
    config_from_meta,
    latest_step,
    read_meta,
    run_dir_of,
)
from paac.run.distributed import DataParallel
from paac.run.envs import make_training_env
from paac.run.rundir import check_writable


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


def segment_env(config: Config, update: int, dp: DataParallel):
    """This process's training environments of the segment that starts at ``update``.

    Process ``p`` runs environments ``[offset, offset + n_local)`` of the run; EnvPool seeds
    environment ``i`` of a pool with ``seed + i`` (wrapping in int32), so its pool starts at
    ``seed + offset`` and the processes' pools together are the one pool of ``n_e``.
    """
    seed = segment_env_seed(config.seed, update) + dp.env_offset
    seed = (seed + 2**31) % 2**32 - 2**31
    return make_training_env(config, seed=seed, num_envs=dp.n_local)


def warn_short_segments(config: Config, env) -> None:
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


class Resume(NamedTuple):
    """The checkpoint a run resumes from: its directory, step and meta, and the run's directory."""

    directory: str
    step: int
    meta: dict
    run_dir: str


def prepare_resume(config: Config, dp: DataParallel) -> Resume | None:
    """The checkpoint ``config.resume`` names, checked against ``config``; None without it."""
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
    if dp.is_main and int(meta["update"]) < config.last_update:
        warn_moved_segments(saved, config)
    run_dir = run_dir_of(directory)
    dp.agree(lambda: check_writable(run_dir, "resume", config.resume) or "")
    return Resume(directory, step, meta, run_dir)


def warn_moved_segments(saved: Config, config: Config) -> None:
    """Warns when a resume moves the steps at which the environments restart.

    With exact resume each interval checkpoint restarts the environments (a new segment);
    a resume that changes the interval, or exact resume itself, restarts them at other
    steps than the run so far would have: allowed, but no longer exact.
    """
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
