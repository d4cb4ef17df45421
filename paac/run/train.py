"""The training loop: rollout, update, log, checkpoint; the one place with side effects.

:func:`train` sets the run up (:mod:`paac.run.setup`), then runs the loop below over the
:class:`~paac.run.setup.Run` it made.
"""

from __future__ import annotations

import signal
import sys
from typing import NamedTuple

from paac.algorithms.common import nonfinite_terms, params_finite
from paac.core.config import Config, WriteError
from paac.core.types import LearnerState
from paac.run import setup
from paac.run.rollout import collect_rollout
from paac.run.signals import StopSignals


class TrainResult(NamedTuple):
    """What a call of :func:`train` ended with."""

    state: LearnerState
    run_dir: str
    steps: int
    episodes: int
    score_last20: float | None
    interrupted: bool
    signal: int | None  # the signal that stopped the run, if one did
    nonfinite: str | None = None  # the update that went non-finite, and what did, if one did
    write_error: str | None = None  # the write that failed and why, if one did


def train(config: Config, *, progress: bool = True) -> TrainResult:
    """Trains ``config`` to ``total_steps`` (or ``target_score``), writing the run directory.

    Checkpoints are saved every ``checkpoint_interval`` steps, at the end, and when
    SIGINT/SIGTERM stops the run (after the current update). With ``config.resume`` the
    run continues from a checkpoint: counters, schedule, RNG and logs go on where they
    were; the environments restart from fresh episodes (:func:`paac.segment_env_seed`).

    The environments are split over ``config.devices`` devices and, under
    ``jax.distributed`` (``--coordinator-address`` ...), over several processes
    (:mod:`paac.run.distributed`): every process calls ``train`` with the same config,
    and process 0 alone writes the logs, the config and the run lock.

    Args:
      config: the run's configuration.
      progress: show a progress bar (process 0).

    Returns:
      The final learner state, the run directory, the steps trained, the episode count,
      the last-20 mean score, and whether (and by which signal) the run was stopped.
    """
    with StopSignals() as stop:
        start = setup.start(config, stop)
        try:
            if start.finished:
                return _finished_already(start, stop)
            return _loop(setup.build(start, stop, progress))
        finally:
            if start.lock is not None:
                start.lock.__exit__()


def _loop(run: setup.Run) -> TrainResult:
    config, stop = run.config, run.stop
    interrupted = False
    signum: int | None = None  # the stop signal, agreed by all processes
    stop.started()  # a signal now stops the loop after its update (and saves)
    try:
        for u in range(run.start_update, config.last_update):
            batch, run.carry = collect_rollout(
                run.env, run.act, run.state, run.carry, run.local_steps, config.t_max,
                run.algorithm.lookahead,
            )  # fmt: skip
            finite_state = run.state
            run.state, metrics, finite = run.update(run.state, batch)
            signum = run.after_update(metrics)
            broken = nonfinite_terms(metrics, finite)
            if broken:  # keep nothing of it: no checkpoint, and the result is the last finite state
                run.state = finite_state
                run.nonfinite = (
                    f"update {u + 1:,} (step {run.steps:,}) made {', '.join(broken)} non-finite"
                )
            last = (
                run.nonfinite is not None
                or run.reached_target
                or signum is not None
                or u + 1 == config.last_update
            )
            if run.log_due or last:
                run.log_row()
            if last:
                break
            if run.checkpoint_due:
                if not _saveable(run):
                    break
                run.checkpoint(next_update=u + 1)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now, keep the last checkpoint
        interrupted = True
    except WriteError as e:  # a full disk, say: stop now, keep the last checkpoint
        run.write_error = str(e)
    else:
        stop.shield()  # further signals must not cut the final save short
        if run.steps > run.last_save_step and run.nonfinite is None and _saveable(run):
            try:
                run.save()
            except WriteError as e:
                run.write_error = str(e)
    finally:
        stop.shield()
        run.close()
    if signum is None:
        signum = stop.signum
    return _report(run, interrupted or signum is not None, signum)


def _saveable(run: setup.Run) -> bool:
    """Whether the parameters are finite, as a checkpoint must be; says so on the run if not."""
    if bool(params_finite(run.state.params)):
        return True
    updates = run.steps // run.config.batch_size
    run.nonfinite = f"update {updates:,} (step {run.steps:,}) left the parameters non-finite"
    return False


def _report(run: setup.Run, interrupted: bool, signum: int | None) -> TrainResult:
    """Says how the run ended (process 0), and returns it."""
    if run.nonfinite is not None or run.write_error is not None:
        return _report_failure(run)
    what = "interrupted" if interrupted else "finished"
    score = run.stats.recent_mean
    score_txt = f", last-20 mean score {score:.2f}" if score is not None else ""
    if run.steps > run.last_save_step:  # a second Ctrl-C stopped it between checkpoints
        if run.resume or run.last_save_step:
            score_txt += f" (its last checkpoint is at step {run.last_save_step:,})"
        else:
            score_txt += " (no checkpoint was saved)"
    if run.dp.is_main:
        print(
            f"paac: {what} at step {run.steps:,}{score_txt}; outputs in {run.run_dir}",
            file=sys.stderr,
            flush=True,
        )
    signum = signum if signum is not None else (signal.SIGINT if interrupted else None)
    return TrainResult(
        run.state, run.run_dir, run.steps, run.stats.episodes, score, interrupted, signum
    )


def _report_failure(run: setup.Run) -> TrainResult:
    """Says which update went non-finite, or which write failed, and what is left to resume
    (process 0); returns the last state that was kept."""
    saved, at = run.resume or run.last_save_step, f"at step {run.last_save_step:,}"
    if run.nonfinite is not None:
        kept = f"the last checkpoint, {at}, is finite" if saved else "no checkpoint was saved"
        line = f"{run.nonfinite}; stopped without saving it ({kept})"
        how = "docs/faults.md says how to investigate"
    else:
        kept = f"its last checkpoint, {at}, is intact" if saved else "no checkpoint was saved"
        line = f"{run.write_error}; the run stopped at step {run.steps:,} ({kept})"
        how = "make room, then resume it with --resume" if saved else "make room"
    if run.dp.is_main:
        print(f"paac: error: {line}; {how}; outputs in {run.run_dir}", file=sys.stderr, flush=True)
    steps = int(run.state.update_count) * run.config.batch_size  # of the state returned
    return TrainResult(
        run.state, run.run_dir, steps, run.stats.episodes, run.stats.recent_mean, False, None,
        run.nonfinite, run.write_error,
    )  # fmt: skip


def _finished_already(start: setup.Start, stop: StopSignals) -> TrainResult:
    """A resume of a run that already reached its end: its final state; nothing is trained
    and nothing in the run directory is written."""
    state, stats = setup.restore_final(start, stop)
    steps = int(start.resume.meta["update"]) * start.config.batch_size
    if start.dp.is_main:
        print(
            f"paac: the run had already finished at step {steps:,}; nothing to train; "
            f"outputs in {start.run_dir}",
            file=sys.stderr,
            flush=True,
        )
    return TrainResult(state, start.run_dir, steps, stats.episodes, stats.recent_mean, False, None)
