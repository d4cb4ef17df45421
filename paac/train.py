"""The training loop: the one place with side effects (environments, logs, progress).

Rollout and update placement, chosen by measurement on XLA:CPU: the rollout is a
Python loop over ``t_max`` steps that calls the jitted ``act`` (one forward pass on
``n_envs`` observations) and EnvPool's C++ ``step``; the update is one jitted call
per rollout. A gradient step placed inside ``lax.scan`` runs several times slower on
XLA:CPU, and the per-step Python overhead (tens of microseconds) is small next to an
environment step; the same code runs unchanged on a GPU.
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

import jax
import numpy as np

from paac.config import Config, ConfigError
from paac.envs import EpisodeStats, check_arch, env_spec, make_training_env
from paac.learner import Batch, LearnerState, init_state, make_act, make_update
from paac.metrics import MetricsWriter
from paac.networks import make_network


class TrainResult(NamedTuple):
    state: LearnerState
    run_dir: str
    steps: int
    episodes: int
    score_last20: float | None
    interrupted: bool


def make_run_dir(config: Config) -> str:
    """``<out_dir>/<env>/<run_name>``, created; a clear ConfigError if it cannot be."""
    name = config.run_name or f"{config.arch}-s{config.seed}-{time.strftime('%Y%m%d-%H%M%S')}"
    run_dir = os.path.join(config.out_dir, config.env, name)
    try:
        os.makedirs(run_dir, exist_ok=True)
        probe = os.path.join(run_dir, ".write-test")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as e:
        raise ConfigError(
            f"--out-dir={config.out_dir!r} is invalid: cannot write {run_dir!r} ({e.strerror})"
        ) from None
    return run_dir


def collect_rollout(env, act, params, key, obs, done_before, stats: EpisodeStats, t_max: int):
    """Steps every environment ``t_max`` times with the current policy.

    Returns ``(batch, key, obs, done_before)`` where the last two carry into the
    next rollout.
    """
    n = obs.shape[0]
    obs_buf = np.empty((t_max,) + obs.shape, obs.dtype)
    action_buf = np.empty((t_max, n), np.int32)
    reward_buf = np.empty((t_max, n), np.float32)
    term_buf = np.empty((t_max, n), bool)
    trunc_buf = np.empty((t_max, n), bool)
    mask_buf = np.empty((t_max, n), np.float32)
    for t in range(t_max):
        obs_buf[t] = obs
        action, key = act(params, obs, key)
        action = np.asarray(action)
        obs, reward, terminated, truncated, info = env.step(action)
        action_buf[t] = action
        reward_buf[t] = reward
        term_buf[t] = terminated
        trunc_buf[t] = truncated
        mask_buf[t] = ~done_before
        stats.step(reward, terminated, truncated, info, ~done_before)
        done_before = terminated | truncated
    batch = Batch(obs_buf, action_buf, reward_buf, term_buf, trunc_buf, mask_buf, obs)
    return batch, key, obs, done_before


def _mean_metrics(pending: list[dict]) -> dict[str, float]:
    if not pending:
        return {}
    host = jax.device_get(pending)
    return {k: float(np.mean([m[k] for m in host])) for k in host[0]}


def train(config: Config, *, progress: bool = True) -> TrainResult:
    """Trains ``config`` to ``total_steps`` (or ``target_score``), writing the run directory.

    Ctrl-C stops cleanly: the outputs so far are kept and the result says so.
    """
    env = make_training_env(config)
    try:
        spec = env_spec(env, config.env)
        check_arch(config, spec)
        run_dir = make_run_dir(config)
    except ConfigError:
        env.close()
        raise
    with open(os.path.join(run_dir, "config.json"), "w") as f:
        f.write(config.to_json())

    network = make_network(config.arch, spec.num_actions, config.conv_impl)
    key = jax.random.PRNGKey(config.seed)
    init_key, act_key = jax.random.split(key)
    state = init_state(config, network, spec, init_key)
    act = jax.jit(make_act(network))
    update = jax.jit(make_update(config, network))

    writer = MetricsWriter(run_dir)
    stats = EpisodeStats(config.n_envs)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(
            total=config.num_updates * config.batch_size,
            unit="step",
            unit_scale=True,
            dynamic_ncols=True,
            mininterval=1.0,
            desc=config.env,
        )

    obs, _ = env.reset()
    done_before = np.zeros(config.n_envs, bool)
    steps = 0
    pending: list[dict] = []
    t_start = time.perf_counter()
    last_log_time, last_log_step = t_start, 0
    interrupted = False

    def log_row(update_idx: int) -> None:
        nonlocal last_log_time, last_log_step, pending
        now = time.perf_counter()
        scores, lengths = stats.drain()
        row = {
            "step": steps,
            "update": update_idx,
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

    try:
        for u in range(config.num_updates):
            batch, act_key, obs, done_before = collect_rollout(
                env, act, state.params, act_key, obs, done_before, stats, config.t_max
            )
            state, metrics = update(state, batch)
            pending.append(metrics)
            steps += config.batch_size
            if bar is not None:
                bar.update(config.batch_size)
            reached = (
                config.target_score is not None
                and stats.recent_full
                and stats.recent_mean >= config.target_score
            )
            if steps - last_log_step >= config.log_interval or reached:
                log_row(u + 1)
            if reached:
                break
        else:
            if steps > last_log_step:
                log_row(config.num_updates)
    except KeyboardInterrupt:
        interrupted = True
        if steps > last_log_step:
            log_row(int(state.update_count))
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        env.close()

    what = "interrupted" if interrupted else "finished"
    score = stats.recent_mean
    score_txt = f", last-20 mean score {score:.2f}" if score is not None else ""
    print(
        f"paac: {what} at step {steps:,}{score_txt}; outputs in {run_dir}",
        file=sys.stderr,
        flush=True,
    )
    return TrainResult(state, run_dir, steps, stats.episodes, score, interrupted)
