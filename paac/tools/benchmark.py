"""Throughput benchmark: raw environment, act-only, update-only and whole-loop steps/s.

The raw environment is EnvPool's, or a Gymnasium task's vector environment
(``gymnasium:ID``, stepped as ``--vectorization`` says). All rates are environment (agent)
steps per second, measured in one process so that they can be compared as ratios. See
``experiments/benchmark.py``.
"""

from __future__ import annotations

import dataclasses
import json
import resource
import sys
import time

import jax
import numpy as np
import tyro

from paac.algorithms.build import init_state, make_algorithm, network_for
from paac.algorithms.common import check_finite, nonfinite_terms
from paac.core.config import Config, ConfigError
from paac.core.tasks import is_gymnasium
from paac.core.xla_cpu import enable_ynn, ynn_enabled
from paac.nets.layers import resolve_conv_impl
from paac.run.envs import EpisodeStats, check_arch, env_spec, make_training_env
from paac.run.memory import check_state_fits
from paac.run.rollout import collect_rollout, initial_carry


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """Measure where the time of a PAAC run goes."""

    env: str = "Pong-v5"
    """EnvPool task id, or gymnasium:ID."""
    arch: str = "nips"
    """nips | nature | mlp."""
    algo: str = "a2c"
    """a2c | nstep_q | q | sarsa."""
    n_envs: int = 32
    """n_e."""
    t_max: int = 5
    """Steps per environment per update."""
    num_threads: int = 0
    """EnvPool threads (0: EnvPool chooses)."""
    vectorization: str = "sync"
    """Gymnasium tasks: sync | async."""
    seconds: float = 60.0
    """Total measuring time, shared between the four measurements."""
    seed: int = 0
    """Seed."""
    mode: str = "sync"
    """sync | a3c | ga3c (a2c only)."""
    workers: int | None = None
    """a3c: workers (None: n_envs)."""
    policy_lag: int = 2
    """ga3c: policy lag in updates."""
    lstm_cells: int = 0
    """LSTM cells after the torso (0: feed-forward)."""


_TIMED = ("obs", "action", "reward", "terminated", "truncated", "mask")


def _timed(fn, seconds: float, steps_per_call: int, warm_up: bool = True) -> float:
    """Calls ``fn`` repeatedly for about ``seconds``; returns steps per second."""
    if warm_up:
        fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return calls * steps_per_call / elapsed


def _total_steps(batch: int) -> int:
    """A run length for the learning-rate schedule, in environment steps.

    A million updates, or as many as fit below Config's 2**31 steps (the measured updates
    are far fewer either way).
    """
    return batch * min(10**6, (2**31 - 1) // batch)


def _check(bench: BenchConfig) -> None:
    """The benchmark's own sizes; Config checks the rest."""
    for name in ("n_envs", "t_max"):
        value = getattr(bench, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}={value!r} is invalid: must be >= 1")
    if bench.n_envs * bench.t_max > 2**31 - 1:
        raise ConfigError(
            f"--t-max={bench.t_max!r} is invalid: a batch of n_e x t_max = "
            f"{bench.n_envs * bench.t_max:,} steps must stay below 2**31"
        )
    if not (isinstance(bench.seconds, (int, float)) and 1e-3 <= bench.seconds < 1e6):
        raise ConfigError(
            f"--seconds={bench.seconds!r} is invalid: must be a number of seconds in "
            "[0.001, 1e6) (it is shared between the measurements)"
        )


def run_benchmark(bench: BenchConfig) -> dict:
    """Measures ``bench``'s run and returns the figures (steps/s, shares, compile times).

    ``bench.seconds`` is shared out: a quarter to the raw environment, an eighth each to act alone
    and to update alone, half to the whole loop, after the compilation of act and update.
    An impossible setting is a ConfigError.
    """
    _check(bench)
    config = Config(
        env=bench.env,
        algo=bench.algo,
        arch=bench.arch,
        n_envs=bench.n_envs,
        t_max=bench.t_max,
        num_threads=bench.num_threads,
        vectorization=bench.vectorization,
        seed=bench.seed,
        total_steps=_total_steps(bench.n_envs * bench.t_max),
        mode=bench.mode,
        workers=bench.workers,
        policy_lag=bench.policy_lag,
        lstm_cells=bench.lstm_cells,
    )
    share = bench.seconds / 8
    env = make_training_env(config)
    try:
        spec = env_spec(env, config.env)
        check_arch(config, spec)
        network = network_for(config, spec)
        check_state_fits(config, network, spec)
    except ConfigError:
        env.close()
        raise
    n = config.n_envs
    rng = np.random.default_rng(bench.seed)

    # 1. The limit: the raw environment with random actions (uniform in the policy's range).
    env.reset()

    def env_step():
        if spec.continuous:
            env.step(rng.uniform(-1.0, 1.0, (n, spec.num_actions)).astype(np.float32))
        else:
            env.step(rng.integers(0, spec.num_actions, size=n, dtype=np.int32))

    env_sps = _timed(env_step, 2 * share, n)

    # 2. Compilation of act and update.
    algorithm = make_algorithm(config, network, spec)
    key = jax.random.PRNGKey(config.seed)
    state = init_state(config, network, spec, key)
    act = jax.jit(algorithm.act)
    update = jax.jit(check_finite(algorithm.update))  # as the training loop runs it
    unchecked = jax.jit(algorithm.update)
    obs, _ = env.reset()
    # A recurrent algorithm acts on (and carries) each environment's memory too.
    carry = initial_carry(key, obs, algorithm.memory)
    recurrent = () if carry.memory is None else (carry.memory, carry.start)
    t0 = time.perf_counter()
    jax.block_until_ready(act(state, obs, key, *recurrent))
    act_compile = time.perf_counter() - t0
    stats = EpisodeStats(n)
    batch, carry = collect_rollout(env, act, state, carry, stats, 1, algorithm.lookahead)
    batch = batch._replace(**{f: np.repeat(getattr(batch, f), config.t_max, 0) for f in _TIMED})
    if recurrent:
        batch = batch._replace(start=np.repeat(batch.start[:1], config.t_max + 1, 0))
    t0 = time.perf_counter()
    jax.block_until_ready(update(state, batch))
    update_compile = time.perf_counter() - t0
    jax.block_until_ready(unchecked(state, batch))

    # 3. Act alone and update alone.
    def act_only():
        jax.block_until_ready(act(state, carry.obs, carry.key, *recurrent))

    def update_only():
        jax.block_until_ready(update(state, batch))

    def unchecked_only():
        jax.block_until_ready(unchecked(state, batch))

    act_sps = _timed(act_only, share, n)
    # The update with and without its non-finite check, alternated against drift.
    rates: dict = {update_only: [], unchecked_only: []}
    for _ in range(2):
        for fn in rates:
            rates[fn].append(_timed(fn, share / 4, config.batch_size))
    update_sps, unchecked_sps = (float(np.mean(r)) for r in rates.values())

    # 4. The whole loop: rollout and update, as in paac.run.train (logging aside), with the
    # time of each part: the environment's step, act (dispatch, compute, the actions' return) and
    # the update (its inputs' transfer, compute). The rest is the loop's own Python.
    parts = {"env": 0.0, "act": 0.0, "update": 0.0}

    class TimedEnv:
        def step(self, action):
            t = time.perf_counter()
            out = env.step(action)
            parts["env"] += time.perf_counter() - t
            return out

    def timed_act(*args):
        t = time.perf_counter()
        actions, *rest = act(*args)  # (key) or, recurrent, (key, memory)
        actions = np.asarray(actions)  # waits for the device, as the rollout does
        if recurrent:
            rest[1] = jax.tree.map(np.asarray, rest[1])  # the memory, as the rollout keeps it
        parts["act"] += time.perf_counter() - t
        return (actions, *rest)

    loop = {"state": state, "carry": carry}

    def train_step():
        b, loop["carry"] = collect_rollout(
            TimedEnv(), timed_act, loop["state"], loop["carry"], stats, config.t_max,
            algorithm.lookahead,
        )  # fmt: skip
        t = time.perf_counter()
        loop["state"], metrics, finite = update(loop["state"], b)
        nonfinite_terms(metrics, finite)  # reads the flag, as the training loop does
        jax.block_until_ready(metrics)
        parts["update"] += time.perf_counter() - t

    train_step()  # warm-up, not counted
    parts.update(env=0.0, act=0.0, update=0.0)
    t0 = time.perf_counter()
    train_sps = _timed(train_step, 4 * share, config.batch_size, warm_up=False)
    loop_time = time.perf_counter() - t0
    loop_share = {k: v / loop_time for k, v in parts.items()}
    env.close()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "env": bench.env,
        "arch": bench.arch,
        "algo": bench.algo,
        "mode": bench.mode,
        "workers": config.num_workers if bench.mode == "a3c" else None,
        "policy_lag": bench.policy_lag if bench.mode == "ga3c" else None,
        "lstm_cells": bench.lstm_cells,
        "n_envs": n,
        "t_max": bench.t_max,
        "num_threads": bench.num_threads,
        "vectorization": bench.vectorization if is_gymnasium(bench.env) else None,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0]),
        "env_sps": round(env_sps, 1),
        "act_sps": round(act_sps, 1),
        "update_sps": round(update_sps, 1),
        "finite_check_cost": round(1 - update_sps / unchecked_sps, 4),
        "train_sps": round(train_sps, 1),
        "train_vs_env": round(train_sps / env_sps, 3),
        "loop_env_share": round(loop_share["env"], 3),
        "loop_act_share": round(loop_share["act"], 3),
        "loop_update_share": round(loop_share["update"], 3),
        "act_compile_s": round(act_compile, 3),
        "update_compile_s": round(update_compile, 3),
        "peak_rss_mib": round(peak_mib, 1),
        "jax": jax.__version__,
        "xla_cpu_ynn": ynn_enabled(),
        "conv_impl": resolve_conv_impl(config.conv_impl) if config.arch != "mlp" else None,
    }


def format_table(r: dict) -> str:
    """The figures of :func:`run_benchmark` as a small text table under a header line."""
    raw = f"Gymnasium {r['vectorization']}" if r.get("vectorization") else "EnvPool"
    rows = [
        (f"raw {raw}, random actions", f"{r['env_sps']:,.0f} steps/s"),
        ("act only (forward on n_e)", f"{r['act_sps']:,.0f} steps/s"),
        ("update only (n_e x t_max batch)", f"{r['update_sps']:,.0f} steps/s"),
        ("its non-finite check", f"{r['finite_check_cost']:.1%} of the update's time"),
        ("whole training loop", f"{r['train_sps']:,.0f} steps/s"),
        (f"training / raw {raw}", f"{r['train_vs_env']:.1%}"),
        (
            "loop time: env step, act, update",
            f"{r['loop_env_share']:.0%}, {r['loop_act_share']:.0%}, "
            f"{r['loop_update_share']:.0%} (rest: Python)",
        ),
        ("compile: act, update", f"{r['act_compile_s']:.2f} s, {r['update_compile_s']:.2f} s"),
        ("peak memory (RSS)", f"{r['peak_rss_mib']:,.0f} MiB"),
    ]
    mode = r.get("mode", "sync")
    if r.get("workers"):
        mode += f"(W={r['workers']})"
    if r.get("policy_lag") is not None:
        mode += f"(lag={r['policy_lag']})"
    lstm = f"+lstm{r['lstm_cells']}" if r.get("lstm_cells") else ""
    head = (
        f"{r['env']}  arch={r['arch']}{lstm}  mode={mode}  n_e={r['n_envs']}  t_max={r['t_max']}  "
        f"backend={r['backend']}  ynn={r['xla_cpu_ynn']}  conv={r['conv_impl']}"
    )
    width = max(len(a) for a, _ in rows)
    return "\n".join([head] + [f"  {a:<{width}}  {b}" for a, b in rows])


def main(args=None) -> dict:
    """Parses a :class:`BenchConfig`, prints the table and one JSON line; returns the figures.

    An impossible setting exits with 2 after one line on stderr.
    """
    bench = tyro.cli(BenchConfig, args=args, description=__doc__)
    enable_ynn()
    try:
        result = run_benchmark(bench)
    except ConfigError as e:
        print(f"paac: error: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    print(format_table(result))
    print(json.dumps(result), flush=True)
    return result
