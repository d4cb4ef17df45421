"""The run configuration: one frozen, typed dataclass, validated on construction."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable
from typing import Any

from paac.core.tasks import gymnasium_problem, is_gymnasium, known_env_ids

ALGOS = ("a2c", "nstep_q", "q", "sarsa")
"""Actor-critic (PAAC) and the value-based methods of Mnih et al. 2016."""
VALUE_ALGOS = ("nstep_q", "q", "sarsa")
ARCHS = ("nips", "nature", "mlp")
"""Network torsos: the two Atari CNNs of the PAAC paper and an MLP for vector observations."""
IMAGE_ARCHS = ("nips", "nature")
LR_SCHEDULES = ("linear", "constant")
CONV_IMPLS = ("auto", "xla", "matmul")
MODES = ("sync", "a3c", "ga3c")
"""sync: PAAC's averaged fresh gradient; a3c: delayed, unaveraged worker gradients; ga3c:
acting with a lagged policy (see :mod:`paac.algorithms.asynchronous`)."""
STALENESS = ("round_robin", "uniform", "fixed")
POLICY_STDS = ("parameter", "softplus")
"""A Gaussian policy's standard deviation: a learned, state-independent log-std, or A3C's
state-dependent softplus head (paac.nets.networks)."""
MAX_LSTM_CELLS = 16_384
"""The most LSTM cells: 16,384 cells already hold 2.1 GiB of recurrent weights alone."""
VECTORIZATIONS = ("sync", "async")
"""How Gymnasium environments are stepped: in this process, or a subprocess each."""


class ConfigError(Exception):
    """A configuration value is impossible; the message names field, value and what is allowed."""


class WriteError(OSError):
    """A file the run writes could not be written; the message names the file and the OS error."""

    def __init__(self, path: str, reason: str):
        super().__init__(reason)
        self.path = self.filename = path
        self.reason = self.strerror = reason

    def __str__(self) -> str:
        return f"cannot write {self.path!r} ({self.reason})"

    @classmethod
    def of(cls, path: str, error: OSError) -> WriteError:
        """The WriteError of an OSError met writing ``path`` (its own file name if it has one)."""
        return cls(error.filename or path, error.strerror or str(error))


def flag(field: str) -> str:
    """The command-line flag of a :class:`Config` field: ``n_envs`` -> ``--n-envs``."""
    return "--" + field.replace("_", "-")


def first_line(error: BaseException, default: str = "") -> str:
    """The first line of an exception's message (for one-line errors), or ``default``."""
    text = str(error).strip()
    return text.splitlines()[0] if text else default


@dataclasses.dataclass(frozen=True)
class Config:
    """PAAC: synchronous parallel advantage actor-critic (Clemente et al. 2017).

    Defaults are the published PAAC settings for Atari.
    """

    env: str = "Pong-v5"
    """EnvPool task id (Pong-v5, CartPole-v1, ...), or gymnasium:ID for a Gymnasium one
    (gymnasium:CartPole-v1, gymnasium:my_pkg.envs:Maze-v0)."""
    preset: str | None = None
    """A task's preset of settings (experiments/control.py picks --env's); flags override it."""
    algo: str = "a2c"
    """a2c (PAAC) | nstep_q | q (one-step Q) | sarsa (one-step Sarsa), Mnih et al. 2016."""
    n_envs: int = 32
    """n_e: environments stepped in lock-step."""
    t_max: int = 5
    """Steps per environment in each rollout; one update per n_e x t_max batch."""
    total_steps: int = 80_000_000
    """Environment (agent) steps to train for; each Atari step is 4 frames."""
    stop_at: int | None = None
    """Stop at this step (with a checkpoint), before total-steps; the learning-rate schedule
    still spans total-steps. None: train to total-steps."""
    seed: int = 0
    """Seed of the environments and of the network and action sampling."""
    arch: str = "nips"
    """Network torso: nips | nature | mlp (mlp for vector observations)."""
    lstm_cells: int = 0
    """LSTM cells after the torso, feeding the heads (A3C-LSTM: 256); 0: feed-forward."""
    shared_torso: bool = True
    """a2c, feed-forward: the value head shares the policy's torso (PAAC's); with
    --no-shared-torso it has a torso of its own (SB3's and CleanRL's MuJoCo networks)."""
    init: str = "orthogonal"
    """Initialisation: orthogonal (CleanRL, SB3) | paac (uniform +-1/sqrt(fan_in), as PAAC's)."""
    policy_init_scale: float = 0.01
    """Gain of the orthogonal initialisation of the policy head (logits, or a Gaussian's mean)."""
    policy_std: str = "parameter"
    """Continuous actions: the Gaussian's std from a learned, state-independent log-std
    (parameter, SB3's and CleanRL's) | a state-dependent softplus head (softplus, A3C's)."""
    log_std_init: float = 0.0
    """Continuous actions: the Gaussian's initial log-std (0: a std of 1, in the policy's
    [-1, 1] action range)."""
    conv_impl: str = "auto"
    """How convolutions are computed: auto | xla | matmul. auto: matmul on XLA:CPU without
    the YNN dot fusion, xla (cuDNN on a GPU) everywhere else; same numbers either way."""
    lr: float = 0.0224
    """Initial learning rate (PAAC: 0.0007 x n_e)."""
    lr_schedule: str = "linear"
    """linear (anneal to 0 at total_steps) | constant."""
    gamma: float = 0.99
    """Discount factor, in [0, 1]."""
    gae_lambda: float | None = None
    """GAE lambda in [0, 1]; None gives PAAC's pure n-step returns."""
    entropy_coef: float = 0.02
    """Weight of the entropy bonus."""
    value_coef: float = 0.5
    """Weight of the value loss 0.5 * (G - V)^2 (0.5 gives PAAC's 0.25 * (G - V)^2)."""
    clip_norm: float = 3.0
    """Global gradient-norm clip (the PAAC paper's own runs used 40)."""
    loss_scale: float | None = None
    """Factor on the batch-mean loss; None = t_max (PAAC tuned lr for a sum over t_max)."""
    rms_decay: float = 0.99
    """RMSProp decay (TF1 flavour: accumulator starts at 1, eps inside the sqrt)."""
    rms_eps: float = 0.1
    """RMSProp epsilon."""
    episodic_life: bool = True
    """Atari training only: a lost life ends the training episode (scores stay whole games)."""
    reward_clip: bool = True
    """Atari training only: clip rewards to [-1, 1] (scores stay raw)."""
    num_threads: int = 0
    """EnvPool worker threads; 0 lets EnvPool choose (one per core); at most n_envs start."""
    vectorization: str = "sync"
    """Gymnasium tasks: sync (stepped in turn in this process) | async (a subprocess each)."""
    normalize_obs: bool = False
    """Normalise observations by their running mean and variance, then clip to +-norm-clip."""
    normalize_reward: bool = False
    """Divide rewards by the running std of the discounted return, then clip to +-norm-clip."""
    norm_clip: float = 10.0
    """Clip of normalised observations and scaled rewards (VecNormalize's 10)."""
    out_dir: str = "checkpoints"
    """Root of the outputs; a run writes to <out-dir>/<env>/<run-name>/."""
    run_name: str | None = None
    """Name of the run directory; None: <arch>-s<seed>-<date-time>."""
    log_interval: int = 20_000
    """Environment steps between rows of metrics.csv and TensorBoard points."""
    target_score: float | None = None
    """Stop early once the mean raw score of the last 20 finished episodes reaches this."""
    target_interval: int = 10_000
    """Value-based algos: agent steps between target-network refreshes (10k = 40k frames)."""
    epsilon_anneal_steps: int = 1_000_000
    """Value-based algos: agent steps over which epsilon anneals from 1 (1M = 4M frames)."""
    final_epsilons: tuple[float, ...] = (0.1, 0.01, 0.5)
    """Value-based algos: final epsilons, one drawn per environment."""
    final_epsilon_probs: tuple[float, ...] = (0.4, 0.3, 0.3)
    """Value-based algos: probabilities of the final epsilons."""
    checkpoint_interval: int = 1_000_000
    """Environment steps between checkpoints (0: only at the end and on SIGINT/SIGTERM)."""
    keep: int = 3
    """How many checkpoints to keep (the newest)."""
    exact_resume: bool = True
    """Restart environments at interval checkpoints so resumed runs equal uninterrupted ones."""
    resume: str | None = None
    """Continue a run from its latest checkpoint: its run directory (or that checkpoint)."""
    mode: str = "sync"
    """sync (PAAC) | a3c (stale, unaveraged worker gradients) | ga3c (lagged acting policy)."""
    workers: int | None = None
    """a3c: workers the n_e environments are split over; None = n_e (one each, as A3C)."""
    staleness: str = "round_robin"
    """a3c: round_robin (equal-speed workers) | uniform (lag in [0, max_staleness]) | fixed."""
    max_staleness: int = 8
    """a3c with uniform or fixed staleness: the largest lag (in updates) of a worker's copy."""
    policy_lag: int = 2
    """ga3c: actions are sampled with the parameters of this many updates ago."""
    devices: int | None = None
    """Devices the n_e environments are split over; None = all local devices (x processes)."""
    coordinator_address: str | None = None
    """Multi-host: HOST:PORT of process 0's coordinator (or $JAX_COORDINATOR_ADDRESS)."""
    num_processes: int | None = None
    """Multi-host: how many processes (hosts) run together (or $JAX_NUM_PROCESSES)."""
    process_id: int | None = None
    """Multi-host: this process's index in [0, num_processes) (or $JAX_PROCESS_ID)."""

    def __post_init__(self) -> None:
        for field in ("final_epsilons", "final_epsilon_probs"):  # JSON gives lists
            if isinstance(getattr(self, field), list):
                object.__setattr__(self, field, tuple(getattr(self, field)))
        _validate(self)

    # Derived sizes: computed, never stored.
    @property
    def batch_size(self) -> int:
        """Transitions per update: n_envs * t_max."""
        return self.n_envs * self.t_max

    @property
    def num_updates(self) -> int:
        """Updates in the run: total_steps // batch_size."""
        return self.total_steps // self.batch_size

    @property
    def last_update(self) -> int:
        """The update the run stops after: ``num_updates``, or the first at or past
        ``stop_at``."""
        if self.stop_at is None:
            return self.num_updates
        return min(self.num_updates, -(-self.stop_at // self.batch_size))

    @property
    def num_workers(self) -> int:
        """a3c's workers W (n_envs when ``workers`` is None); 1 in the other modes."""
        if self.mode != "a3c":
            return 1
        return self.n_envs if self.workers is None else self.workers

    @property
    def effective_loss_scale(self) -> float:
        """The factor on the batch-mean loss: ``loss_scale``, or ``t_max`` when it is None."""
        return float(self.t_max if self.loss_scale is None else self.loss_scale)

    def to_dict(self) -> dict[str, Any]:
        """Every field by name, as a plain dict (what :meth:`from_dict` reads back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Config:
        """The config saved as ``values`` (:meth:`to_dict`), validated.

        Keys this version does not know (a field of another paac version) are dropped.
        """
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def to_json(self) -> str:
        """:meth:`to_dict` as indented JSON with sorted keys (a run's ``config.json``)."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _int_at_least(lo: int) -> Callable[[Any], bool]:
    return lambda x: isinstance(x, int) and not isinstance(x, bool) and x >= lo


def _number(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False):
    def ok(x: Any) -> bool:
        if not _finite(x):
            return False
        return (x > lo if lo_open else x >= lo) and (x < hi if hi_open else x <= hi)

    return ok


def _optional(rule: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda x: x is None or rule(x)


# field -> (rule, what is allowed). Checked in this order; the first failure is reported.
_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "algo": (lambda x: x in ALGOS, f"must be one of {', '.join(ALGOS)}"),
    "n_envs": (_int_at_least(1), "must be an integer >= 1"),
    "t_max": (_int_at_least(1), "must be an integer >= 1"),
    "arch": (lambda x: x in ARCHS, f"must be one of {', '.join(ARCHS)}"),
    "lstm_cells": (
        lambda x: _int_at_least(0)(x) and x <= MAX_LSTM_CELLS,
        f"must be an integer in [0, {MAX_LSTM_CELLS}] (0: feed-forward)",
    ),
    "conv_impl": (lambda x: x in CONV_IMPLS, f"must be one of {', '.join(CONV_IMPLS)}"),
    "lr_schedule": (lambda x: x in LR_SCHEDULES, f"must be one of {', '.join(LR_SCHEDULES)}"),
    "lr": (_number(0, lo_open=True), "must be a finite number > 0"),
    "policy_init_scale": (_number(0, lo_open=True), "must be a finite number > 0"),
    "policy_std": (lambda x: x in POLICY_STDS, f"must be one of {', '.join(POLICY_STDS)}"),
    "log_std_init": (_number(-4.5, 5), "must be a number in [-4.5, 5] (a std of 0.011 to 148)"),
    "init": (lambda x: x in ("orthogonal", "paac"), "must be one of orthogonal, paac"),
    "gamma": (_number(0, 1), "must be in [0, 1]"),
    "gae_lambda": (_optional(_number(0, 1)), "must be in [0, 1], or None for n-step returns"),
    "entropy_coef": (_number(0), "must be a finite number >= 0"),
    "value_coef": (_number(0), "must be a finite number >= 0"),
    "clip_norm": (_number(0, lo_open=True), "must be a finite number > 0"),
    "loss_scale": (_optional(_number(0, lo_open=True)), "must be > 0, or None for t_max"),
    "rms_decay": (_number(0, 1, hi_open=True), "must be in [0, 1)"),
    "rms_eps": (_number(0, lo_open=True), "must be a finite number > 0"),
    "num_threads": (_int_at_least(0), "must be an integer >= 0 (0: EnvPool chooses)"),
    "vectorization": (lambda x: x in VECTORIZATIONS, f"must be one of {', '.join(VECTORIZATIONS)}"),
    "norm_clip": (_number(0, lo_open=True), "must be a finite number > 0"),
    "preset": (
        _optional(lambda x: isinstance(x, str) and x != ""),
        "must be a preset name, or None",
    ),
    "log_interval": (_int_at_least(1), "must be an integer >= 1"),
    "stop_at": (_optional(_int_at_least(1)), "must be an integer >= 1, or None"),
    "seed": (lambda x: _int_at_least(0)(x) and x < 2**31, "must be an integer in [0, 2**31)"),
    "out_dir": (lambda x: isinstance(x, str) and x != "", "must be a non-empty path"),
    "run_name": (
        _optional(lambda x: isinstance(x, str) and x not in ("", ".", "..") and "/" not in x),
        "must be a name without '/' (and not '.' or '..')",
    ),
    "target_score": (_optional(_finite), "must be a finite number, or None"),
    "target_interval": (_int_at_least(1), "must be an integer >= 1"),
    "epsilon_anneal_steps": (_int_at_least(0), "must be an integer >= 0"),
    "final_epsilons": (
        lambda x: len(x) >= 1 and all(_number(0, 1)(e) for e in x),
        "must be one or more numbers in [0, 1]",
    ),
    "final_epsilon_probs": (
        lambda x: len(x) >= 1 and all(_number(0, 1)(p) for p in x) and abs(sum(x) - 1) < 1e-6,
        "must be probabilities (each in [0, 1]) that sum to 1",
    ),
    "checkpoint_interval": (_int_at_least(0), "must be an integer >= 0 (0: end and signals)"),
    "keep": (_int_at_least(1), "must be an integer >= 1"),
    "resume": (_optional(lambda x: isinstance(x, str) and x != ""), "must be a path, or None"),
    "mode": (lambda x: x in MODES, f"must be one of {', '.join(MODES)}"),
    "workers": (_optional(_int_at_least(1)), "must be an integer >= 1, or None for n_envs"),
    "staleness": (lambda x: x in STALENESS, f"must be one of {', '.join(STALENESS)}"),
    "max_staleness": (_int_at_least(0), "must be an integer >= 0"),
    "policy_lag": (_int_at_least(0), "must be an integer >= 0"),
    "devices": (_optional(_int_at_least(1)), "must be an integer >= 1, or None for all"),
    "coordinator_address": (
        _optional(lambda x: isinstance(x, str) and is_host_port(x)),
        "must be HOST:PORT (e.g. 10.0.0.1:1234, a port in [1, 65535]), or None",
    ),
    "num_processes": (_optional(_int_at_least(1)), "must be an integer >= 1, or None"),
    "process_id": (_optional(_int_at_least(0)), "must be an integer >= 0, or None"),
}


_ADDRESS = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")


def is_host_port(x: str) -> bool:
    """``host:port`` (``[v6]:port`` for IPv6) with a port in [1, 65535]."""
    m = _ADDRESS.match(x)
    return m is not None and 1 <= int(m.group(2)) <= 65535


def _fail(field: str, value: Any, allowed: str) -> ConfigError:
    return ConfigError(f"{flag(field)}={value!r} is invalid: {allowed}")


def _validate(c: Config) -> None:
    for field, (ok, allowed) in _RULES.items():
        value = getattr(c, field)
        if not ok(value):
            raise _fail(field, value, allowed)
    if len(c.final_epsilon_probs) != len(c.final_epsilons):
        raise _fail(
            "final_epsilon_probs",
            c.final_epsilon_probs,
            f"must give one probability per final epsilon ({len(c.final_epsilons)})",
        )
    if c.lstm_cells and c.algo != "a2c":
        raise _fail(
            "lstm_cells",
            c.lstm_cells,
            f"the LSTM is for --algo a2c (in every --mode); --algo {c.algo} is feed-forward only",
        )
    if not c.shared_torso and (c.lstm_cells or c.algo != "a2c"):
        what = f"--lstm-cells {c.lstm_cells}" if c.lstm_cells else f"--algo {c.algo}"
        raise ConfigError(
            f"--no-shared-torso is invalid: a torso of the value's own is for the "
            f"feed-forward --algo a2c, not {what}"
        )
    if c.mode != "sync" and c.algo != "a2c":
        allowed = f"the async modes are for --algo a2c (got {c.algo!r}); use sync"
        raise _fail("mode", c.mode, allowed)
    if c.workers is not None and c.n_envs % c.workers:
        raise _fail(
            "workers", c.workers, f"must divide --n-envs={c.n_envs} (each worker gets as many)"
        )
    _validate_placement(c)
    if not isinstance(c.total_steps, int) or not c.batch_size <= c.total_steps < 2**31:
        raise _fail(
            "total_steps",
            c.total_steps,
            f"must be at least n_envs * t_max = {c.batch_size} (one update) and below 2**31",
        )
    if c.normalize_obs and c.arch in IMAGE_ARCHS:
        raise _fail(
            "normalize_obs",
            True,
            f"is for vector observations (--arch mlp); the {c.arch} torso scales frames by 1/255",
        )
    if is_gymnasium(c.env):
        problem = gymnasium_problem(c.env)
        if problem:
            raise _fail("env", c.env, problem)
        return
    known = known_env_ids()
    if c.env not in known:
        close = [e for e in known if e.lower().startswith(c.env.lower().split("-")[0][:4])][:5]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise _fail("env", c.env, f"not an EnvPool task id{hint}; see envpool.list_all_envs()")


def _validate_placement(c: Config) -> None:
    """What can be told without JAX about splitting the environments over devices/hosts."""
    if c.devices is not None and c.n_envs % c.devices:
        raise _fail(
            "devices",
            c.devices,
            f"must divide --n-envs={c.n_envs} (each device steps as many environments)",
        )
    if c.num_processes is not None:
        if c.process_id is not None and c.process_id >= c.num_processes:
            raise _fail(
                "process_id", c.process_id, f"must be below --num-processes={c.num_processes}"
            )
        if c.n_envs % c.num_processes:
            raise _fail(
                "num_processes",
                c.num_processes,
                f"must divide --n-envs={c.n_envs} (each process steps as many environments)",
            )
        if c.devices is not None and c.devices % c.num_processes:
            raise _fail(
                "devices",
                c.devices,
                f"must be a multiple of --num-processes={c.num_processes} "
                "(each process drives as many devices)",
            )
    several = (c.devices or 1) > 1 or (c.num_processes or 1) > 1
    if several and c.mode != "sync":
        raise _fail(
            "mode",
            c.mode,
            "the async modes run on one device in one process; use --mode sync with "
            "--devices/--num-processes, or --devices 1",
        )
